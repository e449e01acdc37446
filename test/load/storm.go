package main

// The fleet storm (-target storm): -devices device agents power on at once
// and enroll, each with its own key and CSR, running the agent's own retry
// policy (client.Retrier: full-jitter exponential backoff, at least the
// server's Retry-After on 429 and 503, other 4xx final) over a new TLS
// connection per attempt, from its own loopback source address
// (127.1.0.0/16), against one 'ca serve' on SQLite or -replicas replicas on
// a fresh PostgreSQL database (devices split round-robin). Meanwhile an
// admin client polls the admin API over mTLS. Afterwards the registry is
// read: no duplicate device, exactly one active certificate each.
//
//	go run ./test/load -target storm -devices 10000 -max-duration 10m
//	go run ./test/load -target storm -devices 10000 -storm-db postgres -replicas 2 -pg-dsn 'host=/tmp/pg user=devpki dbname=x'

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // driver "pgx": create and drop the storm's database
	"go.step.sm/crypto/pemutil"

	"devpki/api/client"
	"devpki/api/wire"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/registry/sqlstore"
)

var (
	stormDB        = flag.String("storm-db", "sqlite", "storm: registry of the replicas: sqlite (one 'ca init' directory) or postgres (a fresh database made from -pg-dsn, dropped afterwards)")
	stormReplicas  = flag.Int("replicas", 0, "storm: 'ca serve' replicas on the one registry (default 1 on sqlite, 2 on postgres); devices are split round-robin")
	stormPGDSN     = flag.String("pg-dsn", "", "storm: PostgreSQL DSN (key=value form) of a server where a fresh database may be created (default $DEVPKI_TEST_POSTGRES_DSN)")
	stormLimits    = flag.String("ca-limits", "", "storm: the CA's limits block as a YAML flow-mapping body, e.g. 'max_in_flight: 4, per_tenant_rate: 50' (default: ca.yaml's defaults)")
	stormConns     = flag.Int("storm-conns", 1000, "storm: at most this many device exchanges (each a new TLS connection) at once, so the load tool's own sockets stay bounded")
	stormAdminInt  = flag.Duration("admin-interval", 100*time.Millisecond, "storm: pause between two admin API requests (list devices, get a device)")
	stormAdminArgs = flag.String("storm-admin", "", "internal (-target storm-admin): PASSWORD-FILE,URL,... of the admin poller")
	stormTimeout   = flag.Duration("device-timeout", 15*time.Minute, "storm: each device's --timeout (the agent's default; bounded by -max-duration)")
)

const stormMaxDevices = 100_000

// stormFigures is what a storm run reports (-json prints it).
type stormFigures struct {
	Devices        int     `json:"devices"`
	DB             string  `json:"db"`
	Replicas       int     `json:"replicas"`
	Limits         string  `json:"ca_limits,omitempty"`
	Enrolled       int     `json:"enrolled"`
	Failed         int     `json:"failed"`
	FirstFailure   string  `json:"first_failure,omitempty"`
	Seconds        float64 `json:"seconds"`
	KeygenSeconds  float64 `json:"keygen_seconds"`
	P50EnrolledMs  float64 `json:"p50_time_to_enrolled_ms"`
	P99EnrolledMs  float64 `json:"p99_time_to_enrolled_ms"`
	MaxEnrolledMs  float64 `json:"max_time_to_enrolled_ms"`
	Attempts       int64   `json:"enroll_attempts"`
	MaxAttempts    int64   `json:"max_attempts_per_device"`
	TransportErrs  int64   `json:"transport_errors"`
	FirstTransport string  `json:"first_transport_error,omitempty"`
	// EnrollStatuses counts the answers to POST /v1/enroll by "status
	// slug" ("201", "429 rate-limited", "503 overloaded"); RootsStatuses
	// those to GET /v1/ca/roots.
	EnrollStatuses map[string]int64 `json:"enroll_statuses"`
	RootsStatuses  map[string]int64 `json:"roots_statuses"`
	// Registry, read after the storm.
	RegistryDevices    int64   `json:"registry_devices"`
	DuplicateDevices   int64   `json:"duplicate_devices"`
	DevicesNotOneCert  int64   `json:"devices_without_exactly_one_active_cert"`
	ActiveCerts        int64   `json:"active_device_certs"`
	TokenUsesLeft      int64   `json:"token_uses_left"`
	ReplyErrors        int64   `json:"reply_errors"`
	ServerCPUSeconds   float64 `json:"server_cpu_seconds"`
	ServerCPUPerEnroll float64 `json:"server_cpu_ms_per_enrollment"`
	ServerCPUUtil      float64 `json:"server_cpu_cores_busy"`
	LoadCPUSeconds     float64 `json:"load_tool_cpu_seconds"`
	ServerMaxRSSMB     float64 `json:"server_max_rss_mb"`
	// Admin API polled during the storm.
	AdminRequests int64   `json:"admin_requests"`
	AdminErrors   int64   `json:"admin_errors"`
	AdminP50ms    float64 `json:"admin_p50_ms"`
	AdminP99ms    float64 `json:"admin_p99_ms"`
	AdminMaxms    float64 `json:"admin_max_ms"`
	AdminFirstErr string  `json:"admin_first_error,omitempty"`
	// AdminSlowest are the five slowest admin requests: when (seconds
	// into the storm), what and how long.
	AdminSlowest []string `json:"admin_slowest,omitempty"`
	// Shed and refused requests as the replicas' access logs name them.
	LogOverloaded   int64 `json:"access_log_overloaded"`
	LogRateLimited  int64 `json:"access_log_rate_limited"`
	LogStoreUnavail int64 `json:"access_log_store_unavailable"`
	LogBusyDB       int64 `json:"log_busy_database_lines"`
	// AdminServer* are the admin requests' latencies inside the replicas
	// (the access log's latency_ms, routes under /v1/admin): the part of
	// the admin poller's latency spent in the handlers, the registry
	// included; the rest is the connection and the processes' scheduling.
	AdminServerP50ms float64 `json:"admin_server_p50_ms"`
	AdminServerP99ms float64 `json:"admin_server_p99_ms"`
	AdminServerMaxms float64 `json:"admin_server_max_ms"`
	adminServer      []float64
}

type stormReplica struct {
	url, log string
	cmd      *exec.Cmd
}

// runStorm is -target storm (and storm-admin, its admin poller).
func runStorm(o options) (err error) {
	if o.target == "storm-admin" {
		return runAdminPoller(o.keep, *stormAdminArgs)
	}
	n := o.devices
	if !flagSet("devices") {
		n = 1000
	}
	if n < 1 || n > stormMaxDevices {
		return fmt.Errorf("-devices must be in [1, %d]", stormMaxDevices)
	}
	if *stormDB != "sqlite" && *stormDB != "postgres" {
		return fmt.Errorf("-storm-db must be sqlite or postgres")
	}
	replicas := *stormReplicas
	if replicas == 0 {
		replicas = map[string]int{"sqlite": 1, "postgres": 2}[*stormDB]
	}
	if replicas < 1 || replicas > 8 {
		return fmt.Errorf("-replicas must be in [1, 8]")
	}
	if *stormConns < 1 {
		return fmt.Errorf("-storm-conns must be positive")
	}
	raiseNoFile()
	work, err := os.MkdirTemp("", "devpki-storm-")
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
	if err := os.WriteFile(pw, []byte("load-test-password\n"), 0o600); err != nil {
		return err
	}
	addrs := make([]string, replicas)
	for i := range addrs {
		port, err := freePort()
		if err != nil {
			return err
		}
		addrs[i] = "127.0.0.1:" + strconv.Itoa(port)
	}
	if out, err := exec.Command(caBin, "init", "--dir", dir, "--password-file", pw, "--listen", addrs[0]).CombinedOutput(); err != nil {
		return fmt.Errorf("ca init: %v\n%s", err, out)
	}
	cfgPath := filepath.Join(dir, "ca.yaml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		return err
	}
	if *stormLimits != "" {
		cfg = append(cfg, "limits: {"+*stormLimits+"}\n"...)
	}
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		return err
	}
	var pgDSN string
	if *stormDB == "postgres" {
		base := *stormPGDSN
		if base == "" {
			base = os.Getenv("DEVPKI_TEST_POSTGRES_DSN")
		}
		if base == "" || strings.Contains(base, "://") {
			return errors.New("-storm-db postgres needs -pg-dsn or $DEVPKI_TEST_POSTGRES_DSN in key=value form (host=... user=... dbname=...)")
		}
		var drop func()
		pgDSN, drop, err = freshStormDB(base)
		if err != nil {
			return err
		}
		defer drop()
		if err := stormUsePostgres(dir, pgDSN); err != nil {
			return err
		}
	}

	root, err := pemutil.ReadCertificate(filepath.Join(dir, "root.crt"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	reps := make([]*stormReplica, replicas)
	for i, addr := range addrs {
		r := &stormReplica{url: "https://" + addr, log: filepath.Join(work, fmt.Sprintf("replica-%d.log", i))}
		lf, err := os.Create(r.log)
		if err != nil {
			return err
		}
		r.cmd = exec.Command(caBin, "serve", "--config", cfgPath, "--listen", addr)
		r.cmd.Stderr, r.cmd.Stdout = lf, lf
		if err := r.cmd.Start(); err != nil {
			lf.Close()
			return err
		}
		lf.Close()
		reps[i] = r
		defer stopServer(r.cmd)
		if err := waitHealthy(r.url, pool, 30*time.Second); err != nil {
			b, _ := os.ReadFile(r.log)
			return fmt.Errorf("replica %d: %w\nlog:\n%s", i, err, b)
		}
	}

	out, err := exec.Command(caBin, "token", "create", "--config", cfgPath, "--uses", strconv.Itoa(n), "--ttl", "2h").Output()
	if err != nil {
		return fmt.Errorf("ca token create: %v", err)
	}
	token := strings.TrimSpace(string(out))

	// Device keys and CSRs are made before the storm (not timed): ECDSA
	// P-256, one per device, as each device makes its own at first boot.
	fmt.Fprintf(os.Stderr, "generating %d device keys and CSRs ...\n", n)
	kt := time.Now()
	bodies, keys, err := makeStormCSRs(n)
	if err != nil {
		return err
	}
	keygen := time.Since(kt)

	fig := &stormFigures{Devices: n, DB: *stormDB, Replicas: replicas, Limits: *stormLimits,
		KeygenSeconds: keygen.Seconds(), EnrollStatuses: map[string]int64{}, RootsStatuses: map[string]int64{}}
	pids := make([]int, replicas)
	for i, r := range reps {
		pids[i] = r.cmd.Process.Pid
	}
	if err := storm(o, fig, reps, pool, root, token, bodies, keys, dir, pw, pids); err != nil {
		return err
	}

	// The registry, read directly.
	if err := checkStormRegistry(fig, dir, pgDSN); err != nil {
		return err
	}
	for i, r := range reps {
		countLog(fig, r.log)
		if o.keep != "" { // -dir keeps the replicas' logs with the CA
			if b, err := os.ReadFile(r.log); err == nil {
				_ = os.WriteFile(filepath.Join(o.keep, fmt.Sprintf("replica-%d.log", i)), b, 0o600)
			}
		}
	}
	if k := len(fig.adminServer); k > 0 {
		slices.Sort(fig.adminServer)
		fig.AdminServerP50ms, fig.AdminServerP99ms, fig.AdminServerMaxms = fig.adminServer[k*50/100], fig.adminServer[min(k-1, k*99/100)], fig.adminServer[k-1]
	}
	printStorm(o, fig)
	if fig.Failed > 0 || fig.DuplicateDevices > 0 || fig.DevicesNotOneCert > 0 || int(fig.RegistryDevices) != fig.Enrolled {
		return fmt.Errorf("storm invariants broken: %d failed, %d duplicates, %d devices without exactly one active certificate, %d devices in the registry for %d enrolled",
			fig.Failed, fig.DuplicateDevices, fig.DevicesNotOneCert, fig.RegistryDevices, fig.Enrolled)
	}
	for k := range fig.EnrollStatuses {
		if c := strings.Fields(k)[0]; c != "201" && c != "429" && c != "503" {
			return fmt.Errorf("storm: enrollment answered %q (only 201, 429 and 503 are expected)", k)
		}
	}
	return nil
}

type ctxDevice struct{}

// storm runs the devices and the admin poller and fills fig.
func storm(o options, fig *stormFigures, reps []*stormReplica, pool *x509.CertPool, root *x509.Certificate, token string,
	bodies []*wire.EnrollRequest, keys []*ecdsa.PrivateKey, dir, pwFile string, pids []int) error {
	n := len(bodies)
	// One transport for the fleet: no keep-alive, no session cache (a new
	// full TLS handshake per attempt, as at first power-on), each device
	// dialing from its own loopback address.
	slots := make(chan struct{}, *stormConns)
	tr := &http.Transport{
		DisableKeepAlives:   true,
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 60 * time.Second,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			i, _ := ctx.Value(ctxDevice{}).(int)
			d := net.Dialer{Timeout: 30 * time.Second, LocalAddr: &net.TCPAddr{IP: deviceSource(i)}}
			return d.DialContext(ctx, network, addr)
		},
	}
	rt := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		select {
		case slots <- struct{}{}:
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
		defer func() { <-slots }()
		return tr.RoundTrip(req)
	})
	clients := make([]*client.Client, len(reps))
	for i, r := range reps {
		c, err := client.New(r.url, client.WithTransport(rt), client.WithUserAgent("devpki-storm/0"))
		if err != nil {
			return err
		}
		clients[i] = c
	}

	var mu sync.Mutex
	var transportErrs, attempts, maxAttempts, replyErrs atomic.Int64
	var firstTransport, firstFailure string
	count := func(m map[string]int64, err error, ok string) {
		key := ok
		if err != nil {
			var re *client.ResponseError
			if !errors.As(err, &re) {
				transportErrs.Add(1)
				mu.Lock()
				if firstTransport == "" {
					firstTransport = err.Error()
				}
				mu.Unlock()
				return
			}
			key = strconv.Itoa(re.StatusCode)
			if re.Problem != nil {
				key += " " + re.Problem.Slug()
			}
		}
		mu.Lock()
		m[key]++
		mu.Unlock()
	}

	maxDur := min(o.maxDuration, *stormTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), o.maxDuration+30*time.Second)
	defer cancel()
	ttes := make([]time.Duration, n)
	ids := make([]string, n)
	replies := make([]*wire.EnrollResponse, n)

	// The admin poller runs in a process of its own, so that its latency
	// is the servers', not this process's scheduling among the devices'
	// goroutines.
	poller, err := startAdminPoller(dir, pwFile, reps)
	if err != nil {
		return err
	}
	start := time.Now()
	cpu0 := make([]time.Duration, len(pids))
	for i, p := range pids {
		cpu0[i], _ = procCPU(p)
	}
	self0 := selfCPU()
	fmt.Fprintf(os.Stderr, "storm: %d devices power on at once against %d replica(s) on %s ...\n", n, len(reps), fig.DB)
	var enrolled, failed atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := clients[i%len(clients)]
			dctx := context.WithValue(ctx, ctxDevice{}, i)
			r := client.Retrier{Deadline: start.Add(maxDur)}
			var tries int64
			// As the agent: fetch the CA roots, then enroll, each through
			// the retry loop.
			err := r.Do(dctx, func(ctx context.Context) error {
				roots, err := cl.Roots(ctx)
				count(fig.RootsStatuses, err, "200")
				if err == nil && (len(roots) == 0 || !roots[0].Equal(root)) {
					return errors.New("roots: the CA served another root")
				}
				return err
			})
			var resp *wire.EnrollResponse
			if err == nil {
				err = r.Do(dctx, func(ctx context.Context) (err error) {
					tries++
					resp, err = cl.Enroll(ctx, token, bodies[i])
					count(fig.EnrollStatuses, err, "201")
					return err
				})
			}
			attempts.Add(tries)
			for m := maxAttempts.Load(); tries > m && !maxAttempts.CompareAndSwap(m, tries); m = maxAttempts.Load() {
			}
			if err != nil {
				failed.Add(1)
				mu.Lock()
				if firstFailure == "" {
					firstFailure = fmt.Sprintf("device %d: %v", i, err)
				}
				mu.Unlock()
				return
			}
			ttes[i] = time.Since(start)
			ids[i] = resp.DeviceID
			replies[i] = resp
			if n := enrolled.Add(1); n%max(1, int64(len(bodies))/10) == 0 {
				fmt.Fprintf(os.Stderr, "  %d/%d enrolled after %.1fs\n", n, len(bodies), time.Since(start).Seconds())
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var cpu time.Duration
	for i, p := range pids {
		c, _ := procCPU(p)
		cpu += c - cpu0[i]
		fig.ServerMaxRSSMB = max(fig.ServerMaxRSSMB, maxRSSMB(p))
	}
	self := selfCPU() - self0
	poll, err := poller.stop()
	if err != nil {
		return err
	}
	// Each device checks its answer as the agent does (after the storm, so
	// the load tool's CPU does not compete with the servers for it).
	for i, resp := range replies {
		if resp == nil {
			continue
		}
		if err := checkStormReply(resp, keys[i], pool); err != nil {
			replyErrs.Add(1)
			if firstFailure == "" {
				firstFailure = fmt.Sprintf("device %d: reply: %v", i, err)
			}
		}
	}

	fig.Enrolled, fig.Failed = int(enrolled.Load()), int(failed.Load())
	fig.FirstFailure, fig.FirstTransport = firstFailure, firstTransport
	fig.Seconds = elapsed.Seconds()
	fig.Attempts, fig.MaxAttempts, fig.TransportErrs, fig.ReplyErrors = attempts.Load(), maxAttempts.Load(), transportErrs.Load(), replyErrs.Load()
	fig.ServerCPUSeconds = cpu.Seconds()
	fig.ServerCPUUtil = cpu.Seconds() / elapsed.Seconds()
	fig.LoadCPUSeconds = self.Seconds()
	if fig.Enrolled > 0 {
		fig.ServerCPUPerEnroll = ms(cpu) / float64(fig.Enrolled)
	}
	var got []time.Duration
	for i, d := range ttes {
		if ids[i] != "" {
			got = append(got, d)
		}
	}
	slices.Sort(got)
	if k := len(got); k > 0 {
		fig.P50EnrolledMs, fig.P99EnrolledMs, fig.MaxEnrolledMs = ms(got[k*50/100]), ms(got[min(k-1, k*99/100)]), ms(got[k-1])
	}
	adminLat := poll.Lat
	order := make([]int, len(adminLat))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return adminLat[order[a]] > adminLat[order[b]] })
	for _, i := range order[:min(5, len(order))] {
		fig.AdminSlowest = append(fig.AdminSlowest, poll.At[i])
	}
	slices.Sort(adminLat)
	fig.AdminRequests, fig.AdminErrors, fig.AdminFirstErr = int64(len(adminLat)), poll.Errs, poll.First
	if k := len(adminLat); k > 0 {
		fig.AdminP50ms, fig.AdminP99ms, fig.AdminMaxms = adminLat[k*50/100], adminLat[min(k-1, k*99/100)], adminLat[k-1]
	}
	return nil
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// deviceSource is device i's loopback source address, 127.1.0.1 onwards
// (250 a /24), so per-source limits count devices as a real fleet's
// addresses would, and each device has its own ephemeral ports.
func deviceSource(i int) net.IP {
	return net.IPv4(127, byte(1+i/62500), byte(i/250%250), byte(i%250+1))
}

// checkStormReply is the agent's check of the answer: the certificate holds
// the device's key and chains to the root through the returned chain.
func checkStormReply(resp *wire.EnrollResponse, key *ecdsa.PrivateKey, roots *x509.CertPool) error {
	leaf, err := client.ParseCertificatesPEM([]byte(resp.Certificate))
	if err != nil {
		return err
	}
	pub, ok := leaf[0].PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return errors.New("the certificate does not hold the device's key")
	}
	inter := x509.NewCertPool()
	for _, c := range resp.Chain {
		cs, err := client.ParseCertificatesPEM([]byte(c))
		if err != nil {
			return err
		}
		for _, c := range cs {
			inter.AddCert(c)
		}
	}
	_, err = leaf[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err
}

// makeStormCSRs makes n device keys and their enrollment requests: serial
// LOAD-<i>, one MAC each (makeCSRs).
func makeStormCSRs(n int) ([]*wire.EnrollRequest, []*ecdsa.PrivateKey, error) {
	bodies, keys, err := makeCSRs(n, false)
	if err != nil {
		return nil, nil, err
	}
	reqs := make([]*wire.EnrollRequest, n)
	for i, b := range bodies {
		var r wire.EnrollRequest
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, nil, err
		}
		reqs[i] = &r
	}
	return reqs, keys, nil
}

// loadAdmin reads the admin certificate and key 'ca init' wrote.
func loadAdmin(dir, pwFile string) (tls.Certificate, error) {
	pw, err := os.ReadFile(pwFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, "admin.crt"))
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := pemutil.Read(filepath.Join(dir, "admin.key"), pemutil.WithPassword(bytes.TrimSpace(pw)))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("admin key: %w", err)
	}
	var c tls.Certificate
	for rest := certPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c.Certificate = append(c.Certificate, b.Bytes)
	}
	c.PrivateKey = key
	return c, nil
}

// freshStormDB creates an empty database on the server of dsn and returns
// its DSN and what drops it.
func freshStormDB(dsn string) (string, func(), error) {
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		return "", nil, err
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	name := "devpki_storm_" + hex.EncodeToString(rnd[:])
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		admin.Close()
		return "", nil, fmt.Errorf("create database %s: %w", name, err)
	}
	var kept []string
	for _, f := range strings.Fields(dsn) {
		if !strings.HasPrefix(f, "dbname=") {
			kept = append(kept, f)
		}
	}
	return strings.Join(append(kept, "dbname="+name), " "), func() {
		if _, err := admin.Exec("DROP DATABASE " + name + " WITH (FORCE)"); err != nil {
			fmt.Fprintf(os.Stderr, "load: drop database %s: %v\n", name, err)
		}
		admin.Close()
	}, nil
}

// stormUsePostgres points the CA of dir at the PostgreSQL database dsn and
// records there what 'ca init' recorded in SQLite (the first admin, the
// TLS and admin certificates); the SQLite file is removed.
func stormUsePostgres(dir, dsn string) error {
	ctx := context.Background()
	cfgPath := filepath.Join(dir, "ca.yaml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		return err
	}
	const sqliteDB = "\ndb:\n    driver: sqlite\n    dsn: registry.db\n"
	if !bytes.Contains(cfg, []byte(sqliteDB)) {
		return fmt.Errorf("ca.yaml from ca init has no SQLite db section")
	}
	cfg = bytes.Replace(cfg, []byte(sqliteDB), []byte(fmt.Sprintf("\ndb:\n    driver: postgres\n    dsn: %s\n", strconv.Quote(dsn))), 1)
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		return err
	}
	for _, f := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(filepath.Join(dir, "registry.db"+f)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	st, err := sqlstore.Open(ctx, sqlstore.Options{Driver: sqlstore.DriverPostgres, DSN: dsn})
	if err != nil {
		return fmt.Errorf("open registry on PostgreSQL: %w", err)
	}
	defer st.Close()
	tenant, err := st.GetTenant(ctx, registry.DefaultTenant)
	if err != nil {
		return err
	}
	now := time.Now()
	who := provision.SystemActor("init", tenant.ID)
	srv, err := pemutil.ReadCertificateBundle(filepath.Join(dir, "server.crt"))
	if err != nil {
		return err
	}
	if err := provision.RecordIssued(ctx, st, who, srv[0], registry.KindServer, tenant.ID, now); err != nil {
		return err
	}
	admChain, err := pemutil.ReadCertificateBundle(filepath.Join(dir, "admin.crt"))
	if err != nil {
		return err
	}
	adm := admChain[0]
	if err := provision.PutAdmin(ctx, st, who, &registry.Admin{Name: adm.Subject.CommonName, TenantID: tenant.ID, Role: registry.RoleAdmin, Super: true, CreatedAt: now}); err != nil {
		return err
	}
	return provision.RecordIssued(ctx, st, who, adm, registry.KindAdmin, tenant.ID, now)
}

// checkStormRegistry reads the storm's devices back from the registry.
func checkStormRegistry(fig *stormFigures, dir, pgDSN string) error {
	var db *sql.DB
	var err error
	if pgDSN != "" {
		db, err = sql.Open("pgx", pgDSN)
	} else {
		db, err = sql.Open("sqlite3", "file:"+filepath.Join(dir, "registry.db")+"?_busy_timeout=10000")
	}
	if err != nil {
		return err
	}
	defer db.Close()
	q := func(query string, out *int64) error {
		if err := db.QueryRow(query).Scan(out); err != nil {
			return fmt.Errorf("registry: %s: %w", query, err)
		}
		return nil
	}
	var distinct int64
	for _, c := range []struct {
		query string
		out   *int64
	}{
		{`SELECT COUNT(*) FROM devices WHERE serial LIKE 'LOAD-%'`, &fig.RegistryDevices},
		{`SELECT COUNT(DISTINCT serial_folded) FROM devices WHERE serial LIKE 'LOAD-%'`, &distinct},
		{`SELECT COUNT(*) FROM certificates c JOIN devices d ON d.id = c.device_id WHERE d.serial LIKE 'LOAD-%' AND c.status = 'active'`, &fig.ActiveCerts},
		{`SELECT COUNT(*) FROM devices d WHERE d.serial LIKE 'LOAD-%' AND (SELECT COUNT(*) FROM certificates c WHERE c.device_id = d.id AND c.status = 'active') <> 1`, &fig.DevicesNotOneCert},
		{`SELECT COALESCE(SUM(uses_left), 0) FROM tokens`, &fig.TokenUsesLeft},
	} {
		if err := q(c.query, c.out); err != nil {
			return err
		}
	}
	fig.DuplicateDevices = fig.RegistryDevices - distinct
	return nil
}

// countLog counts, in a replica's log, the access-log lines of shed and
// refused requests and any busy-database line.
func countLog(fig *stormFigures, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.Contains(line, "problem="+wire.SlugOverloaded):
			fig.LogOverloaded++
		case strings.Contains(line, "problem="+wire.SlugRateLimited):
			fig.LogRateLimited++
		case strings.Contains(line, "problem="+wire.SlugStoreUnavailable):
			fig.LogStoreUnavail++
		}
		if strings.Contains(line, "route=/v1/admin") {
			if _, v, ok := strings.Cut(line, "latency_ms="); ok {
				v, _, _ = strings.Cut(v, " ")
				if ms, err := strconv.ParseFloat(v, 64); err == nil {
					fig.adminServer = append(fig.adminServer, ms)
				}
			}
		}
		l := strings.ToLower(line)
		if strings.Contains(l, "database is locked") || strings.Contains(l, "sqlite_busy") {
			fig.LogBusyDB++
		}
	}
}

func printStorm(o options, f *stormFigures) {
	if o.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(f)
		return
	}
	fmt.Printf("storm: %d devices, %d replica(s) on %s, limits {%s}\n", f.Devices, f.Replicas, f.DB, f.Limits)
	fmt.Printf("enrolled:           %d (failed %d) in %.1fs (keys made before: %.1fs)\n", f.Enrolled, f.Failed, f.Seconds, f.KeygenSeconds)
	fmt.Printf("time to enrolled:   p50 %.0f ms, p99 %.0f ms, max %.0f ms\n", f.P50EnrolledMs, f.P99EnrolledMs, f.MaxEnrolledMs)
	fmt.Printf("enroll attempts:    %d (%.2f per device, at most %d)\n", f.Attempts, float64(f.Attempts)/float64(max(1, f.Devices)), f.MaxAttempts)
	fmt.Printf("enroll statuses:    %s\n", histogram(f.EnrollStatuses))
	fmt.Printf("roots statuses:     %s\n", histogram(f.RootsStatuses))
	fmt.Printf("transport errors:   %d %s\n", f.TransportErrs, f.FirstTransport)
	fmt.Printf("registry:           %d devices, %d duplicates, %d active certificates, %d devices without exactly one; token uses left %d\n",
		f.RegistryDevices, f.DuplicateDevices, f.ActiveCerts, f.DevicesNotOneCert, f.TokenUsesLeft)
	fmt.Printf("server CPU:         %.1f s (%.2f cores busy), %.2f ms per enrollment; max RSS %.0f MB; load tool CPU %.1f s\n",
		f.ServerCPUSeconds, f.ServerCPUUtil, f.ServerCPUPerEnroll, f.ServerMaxRSSMB, f.LoadCPUSeconds)
	fmt.Printf("admin API:          %d requests, %d errors, p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", f.AdminRequests, f.AdminErrors, f.AdminP50ms, f.AdminP99ms, f.AdminMaxms)
	fmt.Printf("admin in replicas:  p50 %.1f ms, p99 %.1f ms, max %.1f ms (access log latency_ms)\n", f.AdminServerP50ms, f.AdminServerP99ms, f.AdminServerMaxms)
	fmt.Printf("access logs:        %d overloaded, %d rate-limited, %d store-unavailable; %d busy-database lines\n",
		f.LogOverloaded, f.LogRateLimited, f.LogStoreUnavail, f.LogBusyDB)
	if f.FirstFailure != "" {
		fmt.Printf("first failure:      %s\n", f.FirstFailure)
	}
	if len(f.AdminSlowest) > 0 {
		fmt.Printf("slowest admin:      %s\n", strings.Join(f.AdminSlowest, "; "))
	}
	if f.AdminFirstErr != "" {
		fmt.Printf("first admin error:  %s\n", f.AdminFirstErr)
	}
}

func histogram(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// raiseNoFile lifts the soft limit on open files to the hard one: every
// device exchange holds a socket.
func raiseNoFile() {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
}

func stopServer(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
	}
}

// adminPoll is what the admin poller reports: each request's latency (ms)
// and description, the errors.
type adminPoll struct {
	Lat   []float64 `json:"lat_ms"`
	At    []string  `json:"at"`
	Errs  int64     `json:"errors"`
	First string    `json:"first_error,omitempty"`
}

type adminPoller struct {
	cmd   *exec.Cmd
	stdin interface{ Close() error }
	out   bytes.Buffer
}

// startAdminPoller starts this tool again as -target storm-admin against
// the replicas; it polls until its stdin is closed (stop).
func startAdminPoller(dir, pwFile string, reps []*stormReplica) (*adminPoller, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{pwFile}
	for _, r := range reps {
		args = append(args, r.url)
	}
	p := &adminPoller{cmd: exec.Command(self, "-target", "storm-admin", "-dir", dir, "-storm-admin", strings.Join(args, ","),
		"-admin-interval", stormAdminInt.String())}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, os.Stderr
	in, err := p.cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	p.stdin = in
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the admin poller: %w", err)
	}
	return p, nil
}

func (p *adminPoller) stop() (*adminPoll, error) {
	p.stdin.Close()
	if err := p.cmd.Wait(); err != nil {
		return nil, fmt.Errorf("admin poller: %w", err)
	}
	var r adminPoll
	if err := json.Unmarshal(p.out.Bytes(), &r); err != nil {
		return nil, fmt.Errorf("admin poller output: %w", err)
	}
	return &r, nil
}

// runAdminPoller is -target storm-admin: list devices, then get one of
// those listed, alternating replicas, over one keep-alive mTLS connection
// per replica (an admin console holds its connection), until stdin closes.
func runAdminPoller(dir, args string) error {
	parts := strings.Split(args, ",")
	if dir == "" || len(parts) < 2 {
		return errors.New("storm-admin: -dir and -storm-admin PASSWORD-FILE,URL,... are required")
	}
	root, err := pemutil.ReadCertificate(filepath.Join(dir, "root.crt"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	cert, err := loadAdmin(dir, parts[0])
	if err != nil {
		return err
	}
	var acs []*client.Client
	for _, u := range parts[1:] {
		c, err := client.New(u, client.WithRoots(pool), client.WithClientCertificate(cert))
		if err != nil {
			return err
		}
		acs = append(acs, c)
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	var r adminPoll
	var known []string
	start := time.Now()
	for k := 0; ; k++ {
		select {
		case <-done:
			return json.NewEncoder(os.Stdout).Encode(&r)
		case <-time.After(*stormAdminInt):
		}
		ac := acs[k%len(acs)]
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t0 := time.Now()
		what := "list"
		var err error
		if (k/len(acs))%2 == 0 || len(known) == 0 {
			var l *wire.DeviceList
			if l, err = ac.ListDevices(ctx, url.Values{"limit": {"50"}}); err == nil {
				known = known[:0]
				for _, d := range l.Devices {
					known = append(known, d.ID)
				}
			}
		} else {
			what = "get"
			_, err = ac.GetDevice(ctx, known[k%len(known)])
		}
		lat := time.Since(t0)
		cancel()
		r.Lat = append(r.Lat, ms(lat))
		r.At = append(r.At, fmt.Sprintf("%s on replica %d at %.1fs: %.0f ms", what, k%len(acs), t0.Sub(start).Seconds(), ms(lat)))
		if err != nil {
			r.Errs++
			if r.First == "" {
				r.First = err.Error()
			}
		}
	}
}
