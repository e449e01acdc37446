// Command load is devpki's whole-process load tool. It starts a real
// 'ca serve' (SQLite on disk) on loopback, or targets one already running,
// enrolls N distinct devices with fresh keys — each over a NEW TLS connection,
// as at first power-on — with C concurrent clients, and reports
// enrollments/second, latency percentiles and the server's CPU time per
// enrollment read from /proc/PID/stat.
//
//	go run ./test/load -n 20000 -c 64
//	go run ./test/load -n 20000 -c 64 -target healthz   # TLS+HTTP floor: same loop, no enrollment
//	go run ./test/load -n 5000 -c 64 -target est        # EST simpleenroll (RFC 7030), token as Basic password
//	go run ./test/load -target tpm -devices 8 -n 400    # TPM attestation, one swtpm per device (tpm.go)
//	go run ./test/load -target badtoken -n 20000 -c 32  # abuse: unknown tokens; audit rows and DB growth (badtoken.go)
//	go run ./test/load -target steprenew -stepca-bin step-ca  # renewals against step-ca, for comparison (stepca.go)
//	go run ./test/load -target renew-vs-stepca -stepca-bin step-ca -rounds 3  # both, alternating, with ratios
//	go run ./test/load -n 5000 -c 64 -kms softhsm       # the issuing key in a throwaway SoftHSM2 token
//	go run ./test/load -db postgres -target renew       # registry in a private PostgreSQL (pg.go); its CPU reported apart
//	go run ./test/load -target adminlist -dir DIR -n 300  # admin list API p99 per filter over mTLS (adminlist.go)
//	go run ./test/load -target storm -devices 10000 -max-duration 10m  # fleet storm: agents' real retry policy at once (storm.go)
//
// -dir DIR keeps the CA; a DIR that already holds a ca.yaml (say one filled by
// test/seed) is served as it is, not made again.
//
// The run is bounded by -n and -max-duration.
package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.step.sm/crypto/pemutil"
	"golang.org/x/crypto/ocsp"

	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest/softhsmtest"
	"devpki/pkg/registry/sqlstore"
)

type options struct {
	n, c        int
	target      string
	caBin       string
	keep        string
	maxDuration time.Duration
	jsonOut     bool
	warmup      int
	profile     string
	classical   bool
	limits      string
	devices     int
	stepBin     string
	rounds      int
	kms         string
	db          string
	noMetrics   bool
	settle      time.Duration
	cold        bool
	noPrefetch  bool
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 5000, "devices to enroll (bounded)")
	flag.IntVar(&o.c, "c", 64, "concurrent clients")
	flag.StringVar(&o.target, "target", "enroll", "enroll; est (EST simpleenroll, new connection each); renew (mTLS, new connection each, devices enrolled first); steprenew (the same against step-ca, -stepca-bin); renew-vs-stepca (both, alternating -rounds); ocsp (keep-alive); tpm (attestation with -devices swtpm instances); badtoken (abuse: unknown tokens, keep-alive; reports audit rows and database growth); or healthz for the TLS-handshake + HTTP floor")
	flag.StringVar(&o.caBin, "ca-bin", "", "path of a built 'ca' binary (default: go build ./cmd/ca into a temp dir)")
	flag.StringVar(&o.keep, "dir", "", "CA directory to create and keep, or to serve again when it holds a ca.yaml (default: a temp dir, removed)")
	flag.DurationVar(&o.maxDuration, "max-duration", 2*time.Minute, "stop sending after this long")
	flag.BoolVar(&o.jsonOut, "json", false, "print the result as JSON")
	flag.IntVar(&o.warmup, "warmup", 200, "requests sent before measuring (tpm: 2 per device unless set)")
	flag.StringVar(&o.profile, "server-cpuprofile", "", "have 'ca serve' write a CPU profile to this file")
	flag.StringVar(&o.limits, "limits", "unlimited", "the CA's door and tenant limits: 'unlimited' (limiters run, set far above the load; "+
		"they would otherwise refuse it) or 'config' (as 'ca init' wrote them; also for -ca-bin binaries that predate limits)")
	flag.BoolVar(&o.classical, "classical", false, "set tls.classical_key_exchange in the CA's config (no hybrid post-quantum key exchange)")
	flag.StringVar(&o.kms, "kms", "", "issuing key in a PKCS#11 token ('ca init --kms'): a pkcs11: token URI, or 'softhsm' for a throwaway SoftHSM2 token (needs softhsm2)")
	flag.BoolVar(&o.noMetrics, "no-metrics", false, "set metrics.enabled false in the CA's config (to measure what the Prometheus metrics cost)")
	flag.IntVar(&o.devices, "devices", 4, "tpm: swtpm instances, each a device enrolling one request at a time (-c is ignored)")
	flag.StringVar(&o.stepBin, "stepca-bin", "", "steprenew: path of a step-ca v0.30.2 binary to renew against (stepca.go)")
	flag.IntVar(&o.rounds, "rounds", 3, "renew-vs-stepca: alternating rounds")
	flag.StringVar(&o.db, "db", "sqlite", "registry: sqlite (DIR/registry.db) or postgres (a private PostgreSQL started for the run, 'ca init --db'; its CPU is reported apart)")
	flag.DurationVar(&o.settle, "settle", 0, "wait this long after the server is healthy before the warm-up (a big registry's CRL build runs then)")
	flag.BoolVar(&o.cold, "cold", false, "sqlite: drop DIR/registry.db from the page cache before the server starts, as after a reboot")
	flag.BoolVar(&o.noPrefetch, "no-prefetch", false, "sqlite: set db.prefetch off in the CA's config (the server does not read the registry into the page cache at start)")
	flag.Parse()
	warmupSet := false
	flag.Visit(func(f *flag.Flag) { warmupSet = warmupSet || f.Name == "warmup" })
	if o.target == "tpm" && !warmupSet {
		o.warmup = 2 * o.devices
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

// result is one run's figures.
type result struct {
	Target         string  `json:"target"`
	N              int     `json:"n"`
	C              int     `json:"c"`
	OK             int64   `json:"ok"`
	Failed         int64   `json:"failed"`
	Seconds        float64 `json:"seconds"`
	PerSecond      float64 `json:"per_second"`
	P50ms          float64 `json:"p50_ms"`
	P99ms          float64 `json:"p99_ms"`
	ServerCPUms    float64 `json:"server_cpu_ms_per_op"`
	ClientCPUms    float64 `json:"client_cpu_ms_per_op"`
	ServerMaxRSSMB float64 `json:"server_max_rss_mb"`
	// RegistryMB and RegistryCachedPct: the SQLite registry file's size and
	// the share of it in the page cache when the measurement started.
	RegistryMB        float64       `json:"registry_mb,omitempty"`
	RegistryCachedPct float64       `json:"registry_cached_pct,omitempty"`
	DB                string        `json:"db"`
	DBCPUms           float64       `json:"db_cpu_ms_per_op,omitempty"`
	FirstError        string        `json:"first_error,omitempty"`
	TPM               *tpmFigures   `json:"tpm,omitempty"`
	Abuse             *abuseFigures `json:"abuse,omitempty"`
}

func run(o options) error {
	if o.n <= 0 || o.c <= 0 || o.n > 1_000_000 || o.c > 4096 {
		return fmt.Errorf("-n must be in [1, 1e6] and -c in [1, 4096]")
	}
	switch o.target {
	case "enroll", "est", "renew", "ocsp", "healthz", "badtoken", "adminlist":
	case "steprenew":
		return runStepRenew(o)
	case "renew-vs-stepca":
		return runVersus(o)
	case "storm", "storm-admin":
		return runStorm(o) // storm.go
	case "tpm":
		if o.devices < 1 || o.devices > maxDevices {
			return fmt.Errorf("-devices must be in [1, %d]", maxDevices)
		}
		o.c = o.devices
	default:
		return fmt.Errorf("-target must be enroll, est, renew, steprenew, renew-vs-stepca, ocsp, tpm, badtoken, adminlist, storm or healthz")
	}
	if o.db != "sqlite" && o.db != "postgres" {
		return fmt.Errorf("-db must be sqlite or postgres")
	}
	if o.db == "postgres" && o.target == "badtoken" {
		return fmt.Errorf("-target badtoken measures the SQLite file; use -db sqlite")
	}
	var fleet *tpmFleet
	if o.target == "tpm" {
		// First: the first swtpm_setup on a machine creates the local CA
		// that configureTPMRoots reads.
		var err error
		fleet, err = launchTPMFleet(o.devices)
		defer fleet.stop()
		if err != nil {
			return err
		}
	}
	work, err := os.MkdirTemp("", "devpki-load-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	dir := o.keep
	if dir == "" {
		dir = filepath.Join(work, "ca")
	}
	caBin, err := caBinary(o.caBin, work)
	if err != nil {
		return err
	}
	pw := filepath.Join(work, "pw")
	if o.keep != "" {
		// A kept CA is served again later: its password outlives this run.
		pw = filepath.Clean(o.keep) + ".password"
	}
	addr, reuse, err := caAddress(dir)
	if err != nil {
		return err
	}
	var pg *privatePG
	if !reuse {
		if err := os.WriteFile(pw, []byte("load-test-password\n"), 0o600); err != nil {
			return err
		}
		initArgs := []string{"init", "--dir", dir, "--password-file", pw, "--listen", addr}
		if o.kms != "" {
			kmsURI, err := tokenURI(o.kms, work)
			if err != nil {
				return err
			}
			initArgs = append(initArgs, "--kms", kmsURI)
		}
		if o.db == "postgres" {
			fmt.Fprintln(os.Stderr, "starting a private PostgreSQL ...")
			pg, err = startPrivatePG(work)
			defer pg.stop()
			if err != nil {
				return err
			}
			initArgs = append(initArgs, "--db", pg.DSN())
		}
		if out, err := exec.Command(caBin, initArgs...).CombinedOutput(); err != nil {
			return fmt.Errorf("ca init: %v\n%s", err, out)
		}
	} else if o.target == "tpm" {
		return fmt.Errorf("-target tpm makes its own CA: leave -dir out or name a new directory")
	}
	if err := setPrefetch(filepath.Join(dir, "ca.yaml"), !o.noPrefetch); err != nil {
		return err
	}
	if o.cold && o.db == "sqlite" {
		if err := sqlstore.Evict(filepath.Join(dir, "registry.db")); err != nil {
			return fmt.Errorf("-cold: %w", err)
		}
	}
	if o.classical || o.limits == "unlimited" || o.noMetrics {
		cfgPath := filepath.Join(dir, "ca.yaml")
		b, err := os.ReadFile(cfgPath)
		if err != nil {
			return err
		}
		if o.classical {
			b = bytes.Replace(b, []byte("\ntls:\n"), []byte("\ntls:\n    classical_key_exchange: true\n"), 1)
		}
		if o.limits == "unlimited" && !bytes.Contains(b, []byte("\nlimits:")) {
			lockout := ""
			if o.target == "badtoken" {
				// The abuse run measures what reaches the audit log: no lockout.
				lockout = ", lockout_failures: 0"
			}
			b = append(b, "limits: {per_source_rate: 1e9, per_source_burst: 1000000000, per_tenant_rate: 1e9, per_tenant_burst: 1000000000, max_in_flight: 0, max_handshakes: 0"+lockout+"}\n"...)
		}
		if o.noMetrics {
			b = append(b, "metrics: {enabled: false}\n"...)
		}
		if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
			return err
		}
	}
	if fleet != nil {
		if err := configureTPMRoots(dir); err != nil {
			return err
		}
	}
	srvArgs := []string{"serve", "--config", filepath.Join(dir, "ca.yaml")}
	if o.profile != "" {
		srvArgs = append(srvArgs, "--cpuprofile", o.profile)
	}
	srv := exec.Command(caBin, srvArgs...)
	var srvLog bytes.Buffer
	srv.Stderr = &srvLog
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() {
		srv.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { srv.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			srv.Process.Kill()
		}
	}()
	base := "https://" + addr
	root, err := pemutil.ReadCertificate(filepath.Join(dir, "root.crt"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	if err := waitHealthy(base, pool, 2*time.Minute); err != nil {
		return fmt.Errorf("%w\nserver log:\n%s", err, srvLog.String())
	}
	time.Sleep(o.settle)
	if o.target == "adminlist" {
		return runAdminList(o, dir, base, pool, srv.Process.Pid)
	}

	total := o.n + o.warmup
	var sendOne func(int) error
	switch {
	case fleet != nil:
		sendOne, err = fleet.prepare(base, pool)
	case o.target == "badtoken":
		sendOne = prepareBadToken(o, base, pool)
	default:
		sendOne, err = prepare(o, caBin, dir, base, pool, total)
	}
	if err != nil {
		return err
	}

	// Warm up (connections, caches, page cache), unmeasured.
	next := atomic.Int64{}
	if _, _, err := drive(o.c, o.warmup, &next, time.Minute, sendOne, nil); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	var swtpm0 time.Duration
	if fleet != nil {
		fleet.resetTimes()
		swtpm0 = fleet.swtpmCPU()
	}
	var reg0 registrySnapshot
	if o.target == "badtoken" {
		if reg0, err = snapshotRegistry(dir); err != nil {
			return err
		}
	}
	var db0 time.Duration
	if pg != nil {
		if db0, err = pg.cpu(); err != nil {
			return err
		}
	}
	var cached, regSize int64
	if o.db == "sqlite" {
		cached, regSize, _ = sqlstore.Resident(filepath.Join(dir, "registry.db"))
	}
	res, err := measure(o, srv.Process.Pid, &next, sendOne)
	if err != nil {
		return err
	}
	if regSize > 0 {
		res.RegistryMB, res.RegistryCachedPct = float64(regSize)/(1<<20), 100*float64(cached)/float64(regSize)
	}
	ok, failed := res.OK, res.Failed
	res.DB = o.db
	if pg != nil && ok > 0 {
		db1, _ := pg.cpu()
		res.DBCPUms = ms(db1-db0) / float64(ok)
	}
	var swtpm1 time.Duration
	if fleet != nil {
		if fleet.ctx.Err() != nil {
			return fmt.Errorf("interrupted after %d enrollments", ok)
		}
		swtpm1 = fleet.swtpmCPU()
	}
	if o.target == "badtoken" {
		time.Sleep(200 * time.Millisecond) // the last refusals' commits
		reg1, err := snapshotRegistry(dir)
		if err != nil {
			return err
		}
		res.Abuse = &abuseFigures{AuditRowsBefore: reg0.auditRows, AuditRowsAfter: reg1.auditRows,
			RefusalRowsBefore: reg0.refusalRows, RefusalRowsAfter: reg1.refusalRows,
			RefusalsCounted: reg1.refusalHits - reg0.refusalHits, DBBytesBefore: reg0.dbBytes, DBBytesAfter: reg1.dbBytes,
			WALBytesBefore: reg0.walBytes, WALBytesAfter: reg1.walBytes}
	}
	if fleet != nil {
		res.TPM = fleet.figures(ok, swtpm1-swtpm0)
		if res.FirstError == "" {
			fmt.Fprintf(os.Stderr, "breakdown: device 0 alone, %d enrollments ...\n", breakdownN)
			if res.TPM.Breakdown, err = fleet.breakdown(breakdownN); err != nil {
				fmt.Fprintln(os.Stderr, "load:", err)
			}
		}
	}
	if err := report(o, res); err != nil {
		return err
	}
	if os.Getenv("LOAD_SERVER_LOG") != "" {
		srv.Process.Signal(syscall.SIGTERM)
		srv.Wait()
		fmt.Print(srvLog.String())
	}
	if failed > 0 {
		return fmt.Errorf("%d requests failed", failed)
	}
	return nil
}

// report prints res, as JSON with -json.
func report(o options, res result) error {
	if o.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Printf("target=%s n=%d c=%d ok=%d failed=%d in %.2fs\n", res.Target, o.n, o.c, res.OK, res.Failed, res.Seconds)
	fmt.Printf("throughput:        %.0f/s\n", res.PerSecond)
	fmt.Printf("latency:           p50 %.2f ms, p99 %.2f ms\n", res.P50ms, res.P99ms)
	fmt.Printf("server CPU per op: %.3f ms   (load tool's own CPU per op: %.3f ms)\n", res.ServerCPUms, res.ClientCPUms)
	if res.DBCPUms > 0 {
		fmt.Printf("PostgreSQL CPU/op: %.3f ms   (ca serve + PostgreSQL: %.3f ms)\n", res.DBCPUms, res.ServerCPUms+res.DBCPUms)
	}
	fmt.Printf("server max RSS:    %.0f MB\n", res.ServerMaxRSSMB)
	if res.RegistryMB > 0 {
		fmt.Printf("registry:          %.0f MB, %.0f%% in the page cache at the start\n", res.RegistryMB, res.RegistryCachedPct)
	}
	if res.TPM != nil {
		printTPM(res.TPM)
	}
	if res.Abuse != nil {
		printAbuse(res.Abuse)
	}
	if res.FirstError != "" {
		fmt.Printf("first error:       %s\n", res.FirstError)
	}
	return nil
}

// measure sends o.n requests (indexes from next) with o.c workers and
// returns the figures: throughput, latency percentiles, and the CPU time
// per successful request of the server process pid and of this tool.
func measure(o options, pid int, next *atomic.Int64, sendOne func(int) error) (result, error) {
	cpu0, err := procCPU(pid)
	if err != nil {
		return result{}, err
	}
	self0 := selfCPU()
	lat := make([]time.Duration, o.n)
	start := time.Now()
	ok, failed, firstErr := drive(o.c, o.n, next, o.maxDuration, sendOne, lat)
	elapsed := time.Since(start)
	cpu1, _ := procCPU(pid)
	self1 := selfCPU()
	res := result{Target: o.target, N: o.n, C: o.c, OK: ok, Failed: failed, Seconds: elapsed.Seconds()}
	if firstErr != nil {
		res.FirstError = firstErr.Error()
	}
	done := int(ok + failed)
	lat = lat[:done]
	slices.Sort(lat)
	if done > 0 {
		res.P50ms = ms(lat[done*50/100])
		res.P99ms = ms(lat[min(done-1, done*99/100)])
	}
	if ok > 0 {
		res.PerSecond = float64(ok) / elapsed.Seconds()
		res.ServerCPUms = ms(cpu1-cpu0) / float64(ok)
		res.ClientCPUms = ms(self1-self0) / float64(ok)
	}
	res.ServerMaxRSSMB = maxRSSMB(pid)
	return res, nil
}

// tokenURI is the -kms token: a pkcs11: URI as given, or for "softhsm" a
// new SoftHSM2 token in work, which 'ca init' and 'ca serve' (children of
// this process) find through $SOFTHSM2_CONF.
func tokenURI(kms, work string) (string, error) {
	if kms != "softhsm" {
		return kms, nil
	}
	tok, err := softhsmtest.New(filepath.Join(work, "softhsm"), "devpki-load")
	if err != nil {
		return "", err
	}
	if err := os.Setenv("SOFTHSM2_CONF", tok.Conf); err != nil {
		return "", err
	}
	return tok.URI(), nil
}

// drive runs send for indexes taken from next until count are sent or
// maxDur passes, with c workers, recording latencies into lat (when non-nil)
// at the position of each request, and printing progress once a second.
func drive(c, count int, next *atomic.Int64, maxDur time.Duration, send func(int) error, lat []time.Duration) (ok, failed int64, firstErr error) {
	var okN, failN atomic.Int64
	var errOnce sync.Once
	deadline := time.Now().Add(maxDur)
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if lat != nil {
					fmt.Fprintf(os.Stderr, "  %d/%d done, %d failed\n", okN.Load()+failN.Load(), count, failN.Load())
				}
			}
		}
	}()
	var wg sync.WaitGroup
	var seq atomic.Int64
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(seq.Add(1) - 1)
				if k >= count || time.Now().After(deadline) {
					return
				}
				i := int(next.Add(1) - 1)
				t0 := time.Now()
				err := send(i)
				if lat != nil {
					lat[k] = time.Since(t0)
				}
				if err != nil {
					failN.Add(1)
					errOnce.Do(func() { firstErr = err })
					continue
				}
				okN.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stop)
	return okN.Load(), failN.Load(), firstErr
}

// makeCSRs makes n device keys and the request bodies that enroll them:
// the JSON of POST /v1/enroll, or for est the base64 DER of EST
// simpleenroll (64-character lines, as openssl writes it).
func makeCSRs(n int, est bool) ([][]byte, []*ecdsa.PrivateKey, error) {
	out := make([][]byte, n)
	keys := make([]*ecdsa.PrivateKey, n)
	var wg sync.WaitGroup
	var firstErr error
	var mu sync.Mutex
	workers := 4
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += workers {
				key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				keys[i] = key
				if err == nil {
					var der []byte
					// runTag keeps the serials and MACs of runs against one
					// kept registry apart.
					serial := fmt.Sprintf("LOAD-%s-%08d", runTag, i)
					// The whole tag (16 bits) in the MAC, not its first byte:
					// with 8 bits, runs against one kept registry collided
					// (clone-suspect) after a dozen runs.
					mac := fmt.Sprintf("02:%s:%s:%02x:%02x:%02x", runTag[:2], runTag[2:4], byte(i>>16), byte(i>>8), byte(i))
					der, err = pki.NewDeviceCSR(key, serial, []string{mac})
					switch {
					case err == nil && est:
						out[i] = estBody(der)
					case err == nil:
						out[i], err = json.Marshal(wire.EnrollRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))})
					}
				}
				if err != nil {
					mu.Lock()
					firstErr = errors.Join(firstErr, err)
					mu.Unlock()
					return
				}
			}
		}(w)
	}
	wg.Wait()
	return out, keys, firstErr
}

// runTag is this run's 4 random hex digits.
var runTag = func() string {
	var b [2]byte
	rand.Read(b[:])
	return fmt.Sprintf("%02x%02x", b[0], b[1])
}()

// caAddress is the address to serve dir on: a free loopback port for a new
// CA; the configured listen address of a CA dir already made (reuse).
func caAddress(dir string) (addr string, reuse bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, "ca.yaml"))
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "listen: "); ok {
				return strings.TrimSpace(v), true, nil
			}
		}
		return "", false, fmt.Errorf("%s/ca.yaml names no listen address", dir)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", false, err
	}
	port, err := freePort()
	if err != nil {
		return "", false, err
	}
	return "127.0.0.1:" + strconv.Itoa(port), false, nil
}

func waitHealthy(base string, pool *x509.CertPool, max time.Duration) error {
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		resp, err := hc.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("ca serve did not become healthy within %s", max)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// procCPU reads utime+stime of pid from /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read server CPU time: %w", err)
	}
	// Fields after the ")" that closes comm: state is field 3; utime 14, stime 15.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / hz, nil
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func maxRSSMB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// prepare does the unmeasured set-up of a target and returns what sends
// request i.
func prepare(o options, caBin, dir, base string, pool *x509.CertPool, total int) (func(int) error, error) {
	// Each request gets a new TLS connection (keep-alives off, no session
	// cache), except for ocsp, which is a relying party's keep-alive client.
	newConnEach := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, DisableKeepAlives: true,
	}}
	if o.target == "healthz" {
		return func(int) error { return do(newConnEach, http.MethodGet, base+"/healthz", "", nil, http.StatusOK) }, nil
	}
	out, err := exec.Command(caBin, "token", "create", "--config", filepath.Join(dir, "ca.yaml"),
		"--uses", strconv.Itoa(total), "--ttl", "2h").Output()
	if err != nil {
		return nil, fmt.Errorf("ca token create: %v", err)
	}
	token := strings.TrimSpace(string(out))
	fmt.Fprintf(os.Stderr, "generating %d device keys and CSRs ...\n", total)
	bodies, keys, err := makeCSRs(total, o.target == "est")
	if err != nil {
		return nil, err
	}
	enroll := func(i int) error {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/enroll", bytes.NewReader(bodies[i]))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		return send(newConnEach, req, http.StatusCreated, nil)
	}
	if o.target == "enroll" {
		return enroll, nil
	}
	if o.target == "est" {
		return func(i int) error {
			req, _ := http.NewRequest(http.MethodPost, base+"/.well-known/est/simpleenroll", bytes.NewReader(bodies[i]))
			req.SetBasicAuth("load", token)
			req.Header.Set("Content-Type", "application/pkcs10")
			return send(newConnEach, req, http.StatusOK, nil)
		}, nil
	}

	// renew and ocsp need enrolled devices: enroll them all first.
	fmt.Fprintf(os.Stderr, "enrolling %d devices first (not measured) ...\n", total)
	certs := make([][]byte, total)
	var chain [][]byte
	var mu sync.Mutex
	var next atomic.Int64
	if _, failed, err := drive(o.c, total, &next, 10*time.Minute, func(i int) error {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/enroll", bytes.NewReader(bodies[i]))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		var er wire.EnrollResponse
		if err := send(newConnEach, req, http.StatusCreated, &er); err != nil {
			return err
		}
		b, _ := pem.Decode([]byte(er.Certificate))
		mu.Lock()
		defer mu.Unlock()
		certs[i] = b.Bytes
		if chain == nil {
			for _, c := range er.Chain {
				cb, _ := pem.Decode([]byte(c))
				chain = append(chain, cb.Bytes)
			}
		}
		return nil
	}, nil); failed > 0 {
		return nil, fmt.Errorf("enrolling the devices: %v", err)
	}
	if o.target == "renew" {
		clients := make([]*http.Client, total)
		for i := range clients {
			tc := tls.Certificate{Certificate: append([][]byte{certs[i]}, chain...), PrivateKey: keys[i]}
			clients[i] = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
				DisableKeepAlives: true,
				TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{tc}},
			}}
		}
		return func(i int) error {
			return do(clients[i], http.MethodPost, base+"/v1/renew", "application/json", []byte("{}"), http.StatusCreated)
		}, nil
	}
	issuer, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, err
	}
	reqs := make([][]byte, total)
	for i := range reqs {
		c, err := x509.ParseCertificate(certs[i])
		if err != nil {
			return nil, err
		}
		if reqs[i], err = ocsp.CreateRequest(c, issuer, nil); err != nil {
			return nil, err
		}
	}
	keepAlive := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: o.c,
	}}
	return func(i int) error {
		return do(keepAlive, http.MethodPost, base+"/ocsp", "application/ocsp-request", reqs[i], http.StatusOK)
	}, nil
}

func do(hc *http.Client, method, url, contentType string, body []byte, want int) error {
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return send(hc, req, want, nil)
}

// send runs req, wants the status, and decodes a JSON reply into out.
func send(hc *http.Client, req *http.Request, want int, out any) error {
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		return fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// estBody is der in base64 with a line break every 64 characters.
func estBody(der []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(der)
	var out []byte
	for len(enc) > 64 {
		out = append(append(out, enc[:64]...), '\n')
		enc = enc[64:]
	}
	return append(append(out, enc...), '\n')
}

// caBinary is the ca binary to run: -ca-bin, or ./cmd/ca built into dir.
func caBinary(caBin, dir string) (string, error) {
	if caBin != "" {
		return caBin, nil
	}
	caBin = filepath.Join(dir, "ca-bin")
	fmt.Fprintln(os.Stderr, "building ./cmd/ca ...")
	if out, err := exec.Command("go", "build", "-o", caBin, "./cmd/ca").CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/ca (run from the repository root): %v\n%s", err, out)
	}
	return caBin, nil
}

// prefetchOff is the line -no-prefetch puts in a CA's db section.
const prefetchOff = "\n    prefetch: off # load -no-prefetch"

// setPrefetch leaves db.prefetch at its default (on) in the ca.yaml at
// path, or sets it off, undoing what an earlier -no-prefetch run on the same
// kept directory wrote.
func setPrefetch(path string, on bool) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	was := b
	b = bytes.ReplaceAll(b, []byte(prefetchOff), nil)
	if !on {
		if !bytes.Contains(b, []byte("\ndb:")) {
			return fmt.Errorf("-no-prefetch: %s has no db section", path)
		}
		b = bytes.Replace(b, []byte("\ndb:"), []byte("\ndb:"+prefetchOff), 1)
	}
	if bytes.Equal(b, was) {
		return nil
	}
	return os.WriteFile(path, b, 0o600)
}
