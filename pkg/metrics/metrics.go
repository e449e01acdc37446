// Package metrics is the CA's Prometheus instrumentation: one registry per
// server (never the global default, so that several servers in one process
// keep their own counts), the devpki_* metrics, and the Go runtime and
// process collectors. A *Metrics is what cmd/ca hands to the places where
// events are decided: provision.Metrics (enrollments, renewals,
// revocations, CRL builds, OCSP answers), sqlstore.CommitObserver (the
// group committer) and api.Metrics (failed authentications at the doors).
// Every label value comes from a small fixed set.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ExpiryCounter counts the active device certificates expiring in [from,
// to). It must be cheap (an index range count): it runs at most once per
// Options.ExpiryTTL. *sqlstore.Store implements it.
type ExpiryCounter interface {
	CountExpiring(ctx context.Context, from, to time.Time) (int64, error)
}

// Options configures New. The zero value serves every metric but
// devpki_certificates_expiring.
type Options struct {
	// Expiring, when set, backs devpki_certificates_expiring.
	Expiring ExpiryCounter
	// ExpiryTTL is how long the expiring counts are reused between scrapes;
	// 0 means DefaultExpiryTTL.
	ExpiryTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Log receives failures to count expiring certificates; nil means
	// slog.Default().
	Log *slog.Logger
}

// DefaultExpiryTTL is how long an expiring-certificates count is reused.
// The counts move by a handful per minute in a fleet of millions; a
// scrape every 15 s must not cost a range count each.
const DefaultExpiryTTL = 5 * time.Minute

// ExpiryWindows are the values of devpki_certificates_expiring's "within"
// label and the windows they name.
var ExpiryWindows = []struct {
	Label  string
	Within time.Duration
}{{"7d", 7 * 24 * time.Hour}, {"30d", 30 * 24 * time.Hour}}

// Metrics holds a registry and the devpki metrics. Its methods are safe for
// concurrent use; a nil *Metrics must not be used (pass a nil interface
// instead).
type Metrics struct {
	reg  *prometheus.Registry
	opts Options

	enrollments  *prometheus.CounterVec
	renewals     *prometheus.CounterVec
	revocations  *prometheus.CounterVec
	crlNumber    prometheus.Gauge
	crlBuild     prometheus.Histogram
	ocsp         *prometheus.CounterVec
	commit       prometheus.Histogram
	batch        prometheus.Histogram
	authFailures *prometheus.CounterVec
}

// Doors are the API doors devpki_auth_failures_total is shown for from the
// start (at 0); api names no others.
var Doors = []string{"enroll", "tpm", "est", "est-reenroll", "renew", "admin"}

// New makes the registry and registers every metric.
func New(opts Options) *Metrics {
	if opts.ExpiryTTL <= 0 {
		opts.ExpiryTTL = DefaultExpiryTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devpki_enrollments_total",
			Help: "Enrollments by method (token, tpm, idevid) and result (ok, or the refusal's class).",
		}, []string{"method", "result"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devpki_renewals_total",
			Help: "Renewals by result (ok, or the refusal's class).",
		}, []string{"result"}),
		revocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devpki_revocations_total",
			Help: "Certificates revoked, by RFC 5280 reason.",
		}, []string{"reason"}),
		crlNumber: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "devpki_crl_number",
			Help: "Number of the CRL this server built last.",
		}),
		crlBuild: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "devpki_crl_build_seconds",
			Help:    "Time to read the revoked certificates, sign and cache a CRL.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8), // 1 ms to 16 s
		}),
		ocsp: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devpki_ocsp_responses_total",
			Help: "OCSP answers by status (good, revoked, unknown, malformed, unauthorized, error).",
		}, []string{"status"}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "devpki_registry_commit_seconds",
			Help:    "Duration of each group-commit transaction of the registry, BEGIN to COMMIT.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 3, 10), // 0.1 ms to 2 s
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "devpki_registry_batch_size",
			Help:    "Writes carried by each group-commit transaction of the registry.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9), // 1 to 256
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devpki_auth_failures_total",
			Help: "Failed authentications by door (enroll, tpm, est, est-reenroll, renew, admin).",
		}, []string{"door"}),
	}
	m.reg.MustRegister(m.enrollments, m.renewals, m.revocations, m.crlNumber, m.crlBuild, m.ocsp, m.commit, m.batch,
		m.authFailures,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.opts = opts
	if opts.Expiring != nil {
		m.WatchExpiring(opts.Expiring)
	}
	// The common series exist from the start, at 0, so that rate() and
	// alerts see them before the first event.
	for _, method := range []string{"token", "tpm", "idevid"} {
		m.enrollments.WithLabelValues(method, "ok")
	}
	m.renewals.WithLabelValues("ok")
	for _, door := range Doors {
		m.authFailures.WithLabelValues(door)
	}
	return m
}

// WatchExpiring adds devpki_certificates_expiring, counted by c (when
// Options.Expiring could not be given to New: the store is opened after
// the metrics it reports to). Call it once.
func (m *Metrics) WatchExpiring(c ExpiryCounter) {
	m.reg.MustRegister(&expiring{opts: m.opts, counter: c, desc: prometheus.NewDesc("devpki_certificates_expiring",
		"Active device certificates (not superseded, not revoked) expiring within the window, counted at most every "+
			m.opts.ExpiryTTL.String()+".", []string{"within"}, nil)})
}

// Registry is the server's registry, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Enrollment implements provision.Metrics.
func (m *Metrics) Enrollment(method, result string) {
	m.enrollments.WithLabelValues(method, result).Inc()
}

// Renewal implements provision.Metrics.
func (m *Metrics) Renewal(result string) { m.renewals.WithLabelValues(result).Inc() }

// Revocation implements provision.Metrics.
func (m *Metrics) Revocation(reason string) { m.revocations.WithLabelValues(reason).Inc() }

// CRLBuilt implements provision.Metrics.
func (m *Metrics) CRLBuilt(number int64, took time.Duration) {
	m.crlNumber.Set(float64(number))
	m.crlBuild.Observe(took.Seconds())
}

// OCSPResponse implements provision.Metrics.
func (m *Metrics) OCSPResponse(status string) { m.ocsp.WithLabelValues(status).Inc() }

// Committed implements sqlstore.CommitObserver.
func (m *Metrics) Committed(writes int, took time.Duration) {
	m.commit.Observe(took.Seconds())
	m.batch.Observe(float64(writes))
}

// AuthFailure implements api.Metrics.
func (m *Metrics) AuthFailure(door string) { m.authFailures.WithLabelValues(door).Inc() }

// expiring is devpki_certificates_expiring: counted on scrape, reused for
// ExpiryTTL. Concurrent scrapes wait for one count.
type expiring struct {
	opts    Options
	counter ExpiryCounter
	desc    *prometheus.Desc

	mu     sync.Mutex
	at     time.Time // of the last successful count; zero: none yet
	counts []int64   // per ExpiryWindows
}

func (e *expiring) Describe(ch chan<- *prometheus.Desc) { ch <- e.desc }

func (e *expiring) Collect(ch chan<- prometheus.Metric) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.opts.Now()
	if e.at.IsZero() || now.Sub(e.at) >= e.opts.ExpiryTTL || now.Before(e.at) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		counts := make([]int64, len(ExpiryWindows))
		var err error
		for i, w := range ExpiryWindows {
			if counts[i], err = e.counter.CountExpiring(ctx, now, now.Add(w.Within)); err != nil {
				break
			}
		}
		cancel()
		if err != nil {
			// The last good counts (if any) are served; the next scrape
			// tries again.
			e.opts.Log.Warn("metrics: count expiring certificates", "err", err)
		} else {
			e.at, e.counts = now, counts
		}
	}
	for i, c := range e.counts {
		ch <- prometheus.MustNewConstMetric(e.desc, prometheus.GaugeValue, float64(c), ExpiryWindows[i].Label)
	}
}
