package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"devpki/api/wire"
	"devpki/pkg/pki"
)

// pgTestDSN is DEVPKI_TEST_POSTGRES_DSN (key=value form) or skips.
func pgTestDSN(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv("DEVPKI_TEST_POSTGRES_DSN")
	if dsn == "" || strings.Contains(dsn, "://") {
		t.Skip("DEVPKI_TEST_POSTGRES_DSN not set (key=value form)")
	}
	return dsn
}

// initCAPostgres runs `ca init --db DSN` with a password file in a fresh
// directory: the registry is the PostgreSQL database dsn.
func initCAPostgres(t *testing.T, dsn string, extra ...string) *testCA {
	t.Helper()
	base := t.TempDir()
	pw := filepath.Join(base, "pw")
	if err := os.WriteFile(pw, []byte(testPassphrase+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "ca")
	args := append([]string{"init", "--dir", dir, "--password-file", pw, "--ip", "127.0.0.1", "--db", dsn}, extra...)
	res := mustRun(t, nil, caBin, args...)
	fp := strings.TrimSpace(res.stdout)
	if !hexFingerprint.MatchString(fp) {
		t.Fatalf("ca init --db: stdout is not one hex SHA-256 fingerprint: %q", res.stdout)
	}
	return &testCA{Dir: dir, Config: filepath.Join(dir, "ca.yaml"), Fingerprint: fp}
}

var crlLine = regexp.MustCompile(`(?m)^CRL (\d+) lists it$`)

// TestPGDeployReplicas: `ca init --db` makes a PostgreSQL registry (the
// config names it; a second init on the same database is refused and
// changes nothing), three `ca serve` replicas share it; devices racing on
// all three for one single-use token get exactly one certificate; and the
// CRL numbers the replicas draw, concurrently and in turn, never repeat and
// only grow.
func TestPGDeployReplicas(t *testing.T) {
	pgDSN := freshPostgresDB(t, pgTestDSN(t))
	ca := initCAPostgres(t, pgDSN)
	cfg, err := os.ReadFile(ca.Config)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), "driver: postgres") || !strings.Contains(string(cfg), "dsn: "+pgDSN) {
		t.Fatalf("ca.yaml does not name the PostgreSQL registry:\n%s", cfg)
	}
	if _, err := os.Stat(filepath.Join(ca.Dir, "registry.db")); !os.IsNotExist(err) {
		t.Errorf("ca init --db made a SQLite file too (%v)", err)
	}
	// Certificates name the full CRL, whose numbers all replicas draw from
	// one counter (checked below); partition CRLs number per partition
	// (TestCRLPartitionReplicas).
	noParts := strings.Replace(string(cfg), "\n    partitions: 256\n", "\n    partitions: -1\n", 1)
	if noParts == string(cfg) {
		t.Fatalf("no crl.partitions line in:\n%s", cfg)
	}
	if err := os.WriteFile(ca.Config, []byte(noParts), 0o600); err != nil {
		t.Fatal(err)
	}
	if res := mustRun(t, nil, caBin, "db", "status", "--config", ca.Config); !strings.Contains(res.stdout, "state:     current") {
		t.Errorf("ca db status after init: %s", res)
	}
	pg, err := sql.Open("pgx", pgDSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	db := &regDB{DB: pg, pg: true}
	if n := db.count(t, `SELECT COUNT(*) FROM admins WHERE super`); n != 1 {
		t.Fatalf("%d super-admins after ca init --db, want the bootstrap admin", n)
	}

	// A second init on the same database: refused, nothing written.
	snapshot := func() string {
		return fmt.Sprint(db.count(t, `SELECT COUNT(*) FROM admins`), db.count(t, `SELECT COUNT(*) FROM certificates`),
			db.count(t, `SELECT COUNT(*) FROM audit_events`))
	}
	before := snapshot()
	dir2 := filepath.Join(t.TempDir(), "ca2")
	res := run(t, nil, caBin, "init", "--dir", dir2, "--password-file", filepath.Join(filepath.Dir(ca.Dir), "pw"), "--db", pgDSN)
	if res.code != 1 || !strings.Contains(res.stderr, "already holds a devpki registry") || !strings.Contains(res.stderr, "nothing was changed") {
		t.Errorf("ca init on a database holding a registry: want exit 1 'already holds a devpki registry', got %s", res)
	}
	if _, err := os.Stat(dir2); !os.IsNotExist(err) {
		t.Errorf("the refused init left %s (%v)", dir2, err)
	}
	if after := snapshot(); after != before {
		t.Errorf("the refused init changed the registry: %s -> %s", before, after)
	}

	// Databases init cannot use: clear errors, no files.
	for _, bad := range []struct{ dsn, want string }{
		{pgDSN + "_missing", "does not exist"},
		{"host=" + filepath.Join(t.TempDir(), "nosock") + " user=devpki dbname=x sslmode=disable", "store unavailable"},
		{"postgres://devpki:secret@127.0.0.1:1/x?sslmode=disable", "store unavailable"},
		{"registry.db", "is not a PostgreSQL connection string"},
	} {
		dir := filepath.Join(t.TempDir(), "ca-bad")
		res := run(t, nil, caBin, "init", "--dir", dir, "--password-file", filepath.Join(filepath.Dir(ca.Dir), "pw"), "--db", bad.dsn)
		if res.code == 0 || !strings.Contains(res.stderr, bad.want) || strings.Contains(res.stderr, "secret") {
			t.Errorf("ca init --db %q: want a failure saying %q (and no password), got %s", bad.dsn, bad.want, res)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("ca init --db %q left %s (%v)", bad.dsn, dir, err)
		}
	}

	reps := make([]*server, 3)
	var wg sync.WaitGroup
	for i := range reps {
		wg.Go(func() { reps[i] = startServer(t, "--config", ca.Config) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// A single-use token, two devices per replica racing for it.
	tok := ca.mintToken(t, reps[0])
	const racers = 6
	results := make([]result, racers)
	errs := make([]error, racers)
	for i := range racers {
		wg.Go(func() {
			sn := fmt.Sprintf("PGD-RACE-%d", i)
			results[i], errs[i] = runE(t, nil, enrollBin, enrollArgs(reps[i%3], ca.Fingerprint, tok.Token,
				filepath.Join(t.TempDir(), sn), sn, "--tpm", "none", "--timeout", "60s")...)
		})
	}
	wg.Wait()
	enrolled := 0
	for i, r := range results {
		switch {
		case errs[i] != nil:
			t.Errorf("racer %d: %v", i, errs[i])
		case r.code == 0:
			enrolled++
		case r.code != 1 || !strings.Contains(r.stderr, wire.SlugTokenSpent):
			t.Errorf("racer %d: want success or %s, got %s", i, wire.SlugTokenSpent, r)
		}
	}
	if enrolled != 1 {
		t.Errorf("%d devices enrolled on three replicas with a single-use token, want 1", enrolled)
	}
	if n := db.count(t, `SELECT COUNT(*) FROM devices WHERE serial LIKE 'PGD-RACE-%'`); n != 1 {
		t.Errorf("%d racing devices recorded, want 1", n)
	}
	if n := db.count(t, `SELECT COUNT(*) FROM certificates c JOIN devices d ON d.id = c.device_id WHERE d.serial LIKE 'PGD-RACE-%'`); n != 1 {
		t.Errorf("%d certificates for the racing devices, want 1", n)
	}
	if n := db.count(t, `SELECT uses_left FROM tokens WHERE id = ?`, tok.ID); n != 0 {
		t.Errorf("single-use token has %d uses left", n)
	}

	// Devices to revoke, enrolled on every replica.
	multi := ca.mintToken(t, reps[1], "--uses", "12")
	var ids []string
	for i := range 9 {
		sn := fmt.Sprintf("PGD-CRL-%d", i)
		ids = append(ids, ca.enrollOK(t, reps[i%3], multi.Token, filepath.Join(t.TempDir(), sn), sn))
	}
	revoke := func(r *server, id string) int64 {
		t.Helper()
		res, err := runE(t, nil, caBin, "devices", "revoke", id, "--reason", "keyCompromise", "--config", ca.Config, "--ca", r.URL)
		if err != nil || res.code != 0 {
			t.Fatalf("revoke %s on %s: %v %s", id, r.URL, err, res)
		}
		m := crlLine.FindStringSubmatch(res.stdout)
		if m == nil {
			t.Fatalf("revoke %s: no 'CRL N lists it' line: %s", id, res)
		}
		n, _ := strconv.ParseInt(m[1], 10, 64)
		return n
	}
	// Three revocations at once, one per replica: three CRL numbers.
	nums := make([]int64, 3)
	for i := range 3 {
		wg.Go(func() { nums[i] = revoke(reps[i], ids[i]) })
	}
	wg.Wait()
	seen := map[int64]bool{}
	var highest int64
	for _, n := range nums {
		if seen[n] {
			t.Errorf("two replicas signed CRL number %d (numbers %v)", n, nums)
		}
		seen[n] = true
		highest = max(highest, n)
	}
	// Then in turn: each replica's CRL number exceeds every number any
	// replica drew before, and the CRL it serves lists the device.
	for i := 3; i < 9; i++ {
		r := reps[i%3]
		n := revoke(r, ids[i])
		if n <= highest {
			t.Errorf("replica %d drew CRL number %d after %d was drawn", i%3, n, highest)
		}
		highest = max(highest, n)
		crl := fetchCRL(t, r)
		if crl.Number.Int64() < n {
			t.Errorf("replica %d serves CRL %d after it drew %d", i%3, crl.Number, n)
		}
	}
	if n := db.count(t, `SELECT number FROM crl_counter WHERE id = 1`); int64(n) < highest {
		t.Errorf("crl_counter %d below the highest number drawn %d", n, highest)
	}
	ca.auditVerify(t)
}

// fetchCRL reads GET /crl from srv.
func fetchCRL(t *testing.T, srv *server) *x509.RevocationList {
	t.Helper()
	crl, err := x509.ParseRevocationList(httpGet(t, srv, "/crl"))
	if err != nil {
		t.Fatalf("CRL from %s: %v", srv.URL, err)
	}
	return crl
}

// enrollOutcome is one enrollment request of the load.
type enrollOutcome struct {
	serial string
	code   int
	slug   string
	retry  string // Retry-After
	err    error  // transport error or timeout
	phase  int32
}

// TestPGRestartUnderLoad: a PostgreSQL restart while devices enroll. A
// private PostgreSQL is stopped (pg_ctl stop -m fast) in the middle of the
// load and started again: every answer is 201 or 503 store-unavailable with
// Retry-After (never a 500, never a request left without an answer within
// the client timeout), /readyz reports the outage, enrollment works again
// once PostgreSQL is back without restarting ca serve, and the registry
// holds each device once, with one certificate, and every device that was
// answered 201.
func TestPGRestartUnderLoad(t *testing.T) {
	if _, err := exec.LookPath("runuser"); err != nil && os.Geteuid() == 0 {
		t.Skip("runuser not installed")
	}
	pg := startPrivatePG(t)
	ca := initCAPostgres(t, pg.DSN())
	srv := startServer(t, "--config", ca.Config)
	tok := ca.mintToken(t, srv, "--uses", "100000")

	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, filepath.Join(ca.Dir, "root.crt")))
	const clientTimeout = 30 * time.Second
	hc := &http.Client{Timeout: clientTimeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
	}}
	enroll := func(serial string) enrollOutcome {
		out := enrollOutcome{serial: serial}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			out.err = err
			return out
		}
		der, err := pki.NewDeviceCSR(key, serial, []string{macFor(serial)})
		if err != nil {
			out.err = err
			return out
		}
		body, _ := json.Marshal(wire.EnrollRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))})
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/enroll", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		resp, err := hc.Do(req)
		if err != nil {
			out.err = err
			return out
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		out.code, out.retry = resp.StatusCode, resp.Header.Get("Retry-After")
		if resp.StatusCode != http.StatusCreated {
			var p wire.Problem
			if json.Unmarshal(b, &p) == nil {
				out.slug = p.Slug()
			}
		}
		return out
	}

	// Phases: 0 before the stop, 1 PostgreSQL down, 2 after the restart.
	var phase atomic.Int32
	var mu sync.Mutex
	var outcomes []enrollOutcome
	counts := func(ph int32, code int) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, o := range outcomes {
			if o.phase == ph && o.code == code {
				n++
			}
		}
		return n
	}
	stop := make(chan struct{})
	var seq atomic.Int64
	var wg sync.WaitGroup
	const workers, maxRequests = 4, 3000
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := seq.Add(1)
				if n > maxRequests {
					return
				}
				ph := phase.Load()
				o := enroll(fmt.Sprintf("PGR-%05d", n))
				o.phase = ph
				mu.Lock()
				outcomes = append(outcomes, o)
				mu.Unlock()
				if o.code == http.StatusServiceUnavailable {
					time.Sleep(50 * time.Millisecond) // an agent would wait Retry-After; keep the load bounded
				}
			}
		})
	}
	t.Cleanup(func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	})
	waitFor := func(what string, limit time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(limit)
		for !cond() {
			if time.Now().After(deadline) || seq.Load() > maxRequests {
				t.Fatalf("gave up waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("enrollments before the outage", 2*time.Minute, func() bool { return counts(0, http.StatusCreated) >= 10 })

	phase.Store(1)
	pg.stop(t)
	waitFor("503 answers during the outage", 2*time.Minute, func() bool { return counts(1, http.StatusServiceUnavailable) >= 10 })
	ready := httpStatus(t, hc, srv.URL+"/readyz")
	health := httpStatus(t, hc, srv.URL+"/healthz")

	pg.start(t)
	phase.Store(2)
	waitFor("enrollments after PostgreSQL came back", 2*time.Minute, func() bool { return counts(2, http.StatusCreated) >= 10 })
	close(stop)
	wg.Wait()

	// /healthz pings the registry too (api/ca.go): it answers, either way.
	if ready != http.StatusServiceUnavailable || (health != http.StatusOK && health != http.StatusServiceUnavailable) {
		t.Errorf("during the outage: /readyz %d (want 503), /healthz %d (want an answer)", ready, health)
	}
	waitFor("/readyz after the restart", time.Minute, func() bool { return httpStatus(t, hc, srv.URL+"/readyz") == http.StatusOK })

	created := map[string]bool{}
	byPhase := map[int32]map[int]int{0: {}, 1: {}, 2: {}}
	for _, o := range outcomes {
		switch {
		case o.err != nil:
			t.Errorf("%s (phase %d): no answer: %v", o.serial, o.phase, o.err)
		case o.code == http.StatusCreated:
			created[o.serial] = true
		case o.code == http.StatusServiceUnavailable:
			if o.slug != wire.SlugStoreUnavailable || o.retry == "" {
				t.Errorf("%s (phase %d): 503 %q Retry-After %q, want %s with Retry-After", o.serial, o.phase, o.slug, o.retry, wire.SlugStoreUnavailable)
			} else if _, err := strconv.Atoi(o.retry); err != nil {
				t.Errorf("%s: Retry-After %q is not seconds", o.serial, o.retry)
			}
		default:
			t.Errorf("%s (phase %d): %d %s, want 201 or 503", o.serial, o.phase, o.code, o.slug)
		}
		if o.err == nil {
			byPhase[o.phase][o.code]++
		}
	}
	t.Logf("answers by phase (0 before, 1 PostgreSQL down, 2 after): %v", byPhase)

	// The registry: each device once with one certificate; every 201 is in it.
	db, err := sql.Open("pgx", pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	reg := &regDB{DB: db, pg: true}
	if n := reg.count(t, `SELECT COUNT(*) FROM (SELECT serial_folded FROM devices GROUP BY tenant_id, serial_folded HAVING COUNT(*) > 1) d`); n != 0 {
		t.Errorf("%d serials recorded on several devices", n)
	}
	if n := reg.count(t, `SELECT COUNT(*) FROM (SELECT device_id FROM certificates WHERE device_id IS NOT NULL
		GROUP BY device_id HAVING COUNT(*) > 1) c`); n != 0 {
		t.Errorf("%d devices with several certificates", n)
	}
	rows, err := db.Query(`SELECT serial FROM devices WHERE serial LIKE 'PGR-%'`)
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]bool{}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		recorded[s] = true
	}
	rows.Close()
	for s := range created {
		if !recorded[s] {
			t.Errorf("device %s was answered 201 but is not in the registry", s)
		}
	}
	// A 503 answers "not done": at most a commit whose acknowledgement the
	// outage cut off may be recorded without its 201.
	extra := 0
	for s := range recorded {
		if !created[s] {
			extra++
		}
	}
	if extra > workers {
		t.Errorf("%d devices recorded that were never answered 201 (at most %d in-flight commits expected)", extra, workers)
	}
	if n := reg.count(t, `SELECT uses_left FROM tokens WHERE id = ?`, tok.ID); n != 100000-len(recorded) {
		t.Errorf("token has %d uses left after %d enrollments", n, len(recorded))
	}
	ca.auditVerify(t)
}

func httpStatus(t *testing.T, hc *http.Client, url string) int {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestDBMigrateCLI: 'ca db status' and 'ca db migrate' on a SQLite registry
// from before versioned migrations, 'ca serve' refusing it under
// db.migrate: manual and serving it once migrated, and a registry a newer
// devpki migrated refused by serve and migrate, naming both versions.
func TestDBMigrateCLI(t *testing.T) {
	ca := initCA(t)
	if res := mustRun(t, nil, caBin, "db", "status", "--config", ca.Config); !strings.Contains(res.stdout, "state:     current") ||
		!strings.Contains(res.stdout, "00001_baseline.sql") {
		t.Fatalf("ca db status after init: %s", res)
	}
	db := ca.openSQL(t)
	sqliteDownToBaseline(t, db)
	if _, err := db.Exec("DROP TABLE goose_db_version"); err != nil { // as a registry made before versioning
		t.Fatal(err)
	}
	if res := mustRun(t, nil, caBin, "db", "status", "--config", ca.Config); !strings.Contains(res.stdout, "before versioned migrations") {
		t.Errorf("ca db status of a legacy registry: %s", res)
	}
	ca.editConfig(t, "    dsn: registry.db\n", "    dsn: registry.db\n    migrate: manual\n")
	s, err := tryStartServer(t, freePort(t), []string{"--config", ca.Config})
	if err == nil || !strings.Contains(s.stderr.String(), "ca db migrate") {
		t.Fatalf("ca serve with db.migrate manual on a legacy registry: want a refusal naming 'ca db migrate', got %v\n%s", err, s.stderr)
	}
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE name = 'goose_db_version'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("the refused serve changed the schema (%d, %v)", n, err)
	}
	res := mustRun(t, nil, caBin, "db", "migrate", "--config", ca.Config)
	if !strings.Contains(res.stderr, "predates versioned migrations") || !strings.Contains(res.stderr, "applied 1 legacy upgrade") ||
		!regexp.MustCompile(`registry schema is at version \d+`).MatchString(res.stdout) {
		t.Errorf("ca db migrate of a legacy registry: %s", res)
	}
	if res := mustRun(t, nil, caBin, "db", "migrate", "--config", ca.Config); !strings.Contains(res.stdout, "nothing to do") {
		t.Errorf("ca db migrate again: %s", res)
	}
	srv := startServer(t, "--config", ca.Config)
	tok := ca.mintToken(t, srv)
	ca.enrollOK(t, srv, tok.Token, filepath.Join(t.TempDir(), "dev"), "MIG-1")
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}

	// A newer devpki's version.
	if _, err := db.Exec(`INSERT INTO goose_db_version (version_id, is_applied) VALUES (999, true)`); err != nil {
		t.Fatal(err)
	}
	res = mustRun(t, nil, caBin, "db", "status", "--config", ca.Config)
	if !strings.Contains(res.stdout, "NEWER than this devpki") || !strings.Contains(res.stdout, "999") {
		t.Errorf("ca db status of a newer schema: %s", res)
	}
	res = run(t, nil, caBin, "db", "migrate", "--config", ca.Config)
	if res.code != 1 || !strings.Contains(res.stderr, "schema version 999") || !strings.Contains(res.stderr, "upgrade this binary") {
		t.Errorf("ca db migrate of a newer schema: %s", res)
	}
	s, err = tryStartServer(t, freePort(t), []string{"--config", ca.Config})
	if err == nil || !regexp.MustCompile(`schema version 999, this devpki knows versions up to \d+`).MatchString(s.stderr.String()) ||
		!strings.Contains(s.stderr.String(), "upgrade this binary") {
		t.Fatalf("ca serve on a newer schema: want a refusal naming both versions, got %v\n%s", err, s.stderr)
	}
	if res := run(t, nil, caBin, "db", "status"); res.code != 2 {
		t.Errorf("ca db status without --config: %s", res)
	}
}

// sqliteDownToBaseline undoes, newest first, every SQLite migration after
// the baseline (its "-- +goose Down" section), so that dropping the version
// table then leaves a registry as devpki made it before versioning.
func sqliteDownToBaseline(t *testing.T, db *sql.DB) {
	t.Helper()
	files, err := filepath.Glob("../../pkg/registry/sqlstore/migrations/sqlite/*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("SQLite migrations: %v, %v", files, err)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(files)))
	for _, f := range files {
		if strings.HasPrefix(filepath.Base(f), "00001_") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		_, down, ok := strings.Cut(string(b), "-- +goose Down")
		if !ok {
			t.Fatalf("%s has no Down section", f)
		}
		if _, err := db.Exec(down); err != nil {
			t.Fatalf("%s down: %v", f, err)
		}
	}
}
