package e2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // driver "pgx" to create and drop the test database

	"devpki/api/client"
	"devpki/api/client/tpmenroll"
	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/registry/sqlstore"
	"devpki/pkg/tpm"
	"devpki/pkg/tpm/swtpmtest"
)

// replicaTTL is tpm.challenge_ttl of both replicas: long enough for swtpm
// to answer on a loaded 2-core machine, short enough to wait out.
const replicaTTL = 4 * time.Second

// TestReplicas (invariant 10: no replica's memory is needed for
// correctness): two `ca serve` processes, A and B, on one registry — the
// SQLite file of one `ca init` directory and, with DEVPKI_TEST_POSTGRES_DSN,
// one fresh PostgreSQL database. A swtpm device asks A for a TPM challenge
// and answers it on B: 201, the certificate chains to the root, the device
// is recorded once. The same answer replayed on A is 409 challenge-used; a
// challenge from A answered on B after its TTL is 410 challenge-expired
// (and the row shows it was found and expired, not unknown). A token minted
// through A and spent by an enrollment on B is refused as spent on A. The
// TPM manufacturer root is added through A and trusted by B. Six devices
// race on both replicas for a 2-use token: exactly two enroll. The audit
// chain both wrote verifies, and neither replica logged a busy database.
func TestReplicas(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		ca := initCA(t)
		db, err := sql.Open("sqlite3", "file:"+ca.DB+"?_busy_timeout=10000")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		replicasScenario(t, ca, &regDB{DB: db}, ca.openStore(t))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		dsn := os.Getenv("DEVPKI_TEST_POSTGRES_DSN")
		if dsn == "" || strings.Contains(dsn, "://") {
			t.Skip("DEVPKI_TEST_POSTGRES_DSN not set (key=value form)")
		}
		ca := initCA(t)
		pgDSN := freshPostgresDB(t, dsn)
		usePostgres(t, ca, pgDSN)
		db, err := sql.Open("pgx", pgDSN)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		st, err := sqlstore.Open(context.Background(), sqlstore.Options{Driver: sqlstore.DriverPostgres, DSN: pgDSN})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		replicasScenario(t, ca, &regDB{DB: db, pg: true}, st)
	})
}

func replicasScenario(t *testing.T, ca *testCA, db *regDB, st *sqlstore.Store) {
	ctx := context.Background()
	rootFile := enableTPM(t, ca, "challenge_ttl: "+replicaTTL.String())
	a := startServer(t, "--config", ca.Config)
	b := startServer(t, "--config", ca.Config)
	t.Cleanup(func() {
		for name, s := range map[string]*server{"A": a, "B": b} {
			for _, line := range strings.Split(s.stderr.String(), "\n") {
				l := strings.ToLower(line)
				if strings.Contains(l, "database is locked") || strings.Contains(l, "sqlite_busy") || strings.Contains(l, "database table is locked") {
					t.Errorf("replica %s (%s) met a busy registry: %s", name, s.URL, line)
				}
			}
		}
	})
	// The manufacturer root goes in through A; B reads it from the registry.
	mustRun(t, nil, caBin, "tpm", "roots", "add", rootFile, "--config", ca.Config, "--ca", a.URL)

	caRoot := readCert(t, filepath.Join(ca.Dir, "root.crt"))
	roots := x509.NewCertPool()
	roots.AddCert(caRoot)
	if got, err := client.FetchRootsPinned(ctx, b.URL, ca.Fingerprint); err != nil || len(got) == 0 || !got[0].Equal(caRoot) {
		t.Fatalf("pinned root from B: %v, %v", got, err)
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
	}}
	clA, err := client.New(a.URL, client.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}

	sw := swtpmtest.Start(t)
	tp, err := tpm.Open(ctx, sw.Spec(), tpm.Options{StateDir: filepath.Join(t.TempDir(), "tpm")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	const akName, serial, mac = "devpki-ak", "REPL-TPM-1", "02:00:00:00:0c:01"
	macs := []string{mac}
	claim, err := tpmenroll.Claim(ctx, tp, akName, serial, macs)
	if err != nil {
		t.Fatal(err)
	}

	// Challenge from A, answer on B.
	ch, err := clA.TPMChallenge(ctx, claim)
	if err != nil {
		t.Fatalf("challenge from A: %v", err)
	}
	ans, err := tpmenroll.Answer(ctx, tp, akName, "key-1", ch, serial, macs)
	if err != nil {
		t.Fatal(err)
	}
	if time.Now().After(ch.Expires) {
		t.Fatalf("swtpm took longer than the %s challenge TTL to answer; raise replicaTTL", replicaTTL)
	}
	code, body := postJSON(t, hc, b.URL+"/v1/enroll/tpm", ans.Request)
	if code != http.StatusCreated {
		t.Fatalf("challenge issued by A, answered on B: want 201, got %d %s", code, body)
	}
	var resp wire.EnrollResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("enroll reply: %v\n%s", err, body)
	}
	leaf := verifyIssued(t, &resp, roots, ans.Signer.Public())
	id, err := pki.DeviceIdentity(leaf, "devpki.local")
	if err != nil || id.EKHash == "" || id.DeviceID != resp.DeviceID {
		t.Fatalf("certificate identity %+v, %v; want device %s with an EK", id, err, resp.DeviceID)
	}
	dev, err := st.GetDevice(ctx, resp.DeviceID)
	if err != nil || dev.Method != provision.MethodTPM || dev.EKHash != id.EKHash || dev.Serial != serial {
		t.Fatalf("registry device = %+v, %v; want method tpm, serial %s, EK %s", dev, err, serial, id.EKHash)
	}
	requireDevicesOnce := func(when string) {
		t.Helper()
		if n := db.count(t, `SELECT COUNT(*) FROM devices WHERE serial = ?`, serial); n != 1 {
			t.Errorf("%s: %d device rows for serial %s, want 1", when, n, serial)
		}
		if devs, err := st.ListDevices(ctx, registry.DeviceFilter{EKHash: id.EKHash, Limit: 10}); err != nil || len(devs) != 1 {
			t.Errorf("%s: %d devices bound to the EK (%v), want 1", when, len(devs), err)
		}
	}
	requireDevicesOnce("after the enrollment")
	certs := db.count(t, `SELECT COUNT(*) FROM certificates`)

	// The same answer again, on A and on B: the challenge is spent in the
	// database, whichever replica is asked.
	for name, s := range map[string]*server{"A": a, "B": b} {
		code, body = postJSON(t, hc, s.URL+"/v1/enroll/tpm", ans.Request)
		requireProblem(t, "the answer replayed on "+name, code, body, http.StatusConflict, wire.SlugChallengeUsed)
	}

	// A challenge from A, answered (in time by the TPM) but delivered to B
	// after its TTL.
	ch2, err := clA.TPMChallenge(ctx, claim)
	if err != nil {
		t.Fatalf("second challenge from A: %v", err)
	}
	if d := time.Until(ch2.Expires); d <= 0 || d > replicaTTL+time.Second {
		t.Fatalf("challenge expires in %s; want about the configured %s", d, replicaTTL)
	}
	ans2, err := tpmenroll.Answer(ctx, tp, akName, "key-2", ch2, serial, macs)
	if err != nil {
		t.Fatal(err)
	}
	if db.bool(t, `SELECT used FROM tpm_challenges WHERE id = ?`, ch2.ChallengeID) {
		t.Fatal("the pending challenge is already marked used")
	}
	time.Sleep(time.Until(ch2.Expires) + 500*time.Millisecond)
	code, body = postJSON(t, hc, b.URL+"/v1/enroll/tpm", ans2.Request)
	requireProblem(t, "A's challenge answered on B after its TTL", code, body, http.StatusGone, wire.SlugChallengeExpired)
	// 410 also covers an unknown challenge: the row shows B found A's
	// challenge and closed it as expired.
	if !db.bool(t, `SELECT used FROM tpm_challenges WHERE id = ?`, ch2.ChallengeID) {
		t.Error("the expired challenge was not closed in the registry")
	}
	code, body = postJSON(t, hc, a.URL+"/v1/enroll/tpm", ans2.Request)
	requireProblem(t, "the expired challenge's answer then sent to A", code, body, http.StatusConflict, wire.SlugChallengeUsed)
	requireDevicesOnce("after the refused answers")
	if n := db.count(t, `SELECT COUNT(*) FROM certificates`); n != certs {
		t.Errorf("refused answers recorded %d certificates", n-certs)
	}

	// A token minted through A, spent by an enrollment on B, is spent on A.
	tok := ca.mintToken(t, a)
	enrollSoft := func(s *server, serial, mac string) result {
		return run(t, nil, enrollBin, "--ca", s.URL, "--fingerprint", ca.Fingerprint, "--token", tok.Token,
			"--dir", filepath.Join(t.TempDir(), serial), "--serial", serial, "--mac", mac, "--tpm", "none", "--timeout", "30s")
	}
	res := enrollSoft(b, "REPL-TOK-1", "02:00:00:00:0c:02")
	if res.code != 0 || enrolledLine.FindStringSubmatch(res.stdout) == nil {
		t.Fatalf("token minted through A, enrolling on B: want exit 0, got %s", res)
	}
	if n := db.count(t, `SELECT uses_left FROM tokens WHERE id = ?`, tok.ID); n != 0 {
		t.Fatalf("token spent on B has %d uses left", n)
	}
	res = enrollSoft(a, "REPL-TOK-2", "02:00:00:00:0c:03")
	if res.code != 1 || !strings.Contains(res.stderr, wire.SlugTokenSpent) {
		t.Fatalf("token spent on B, presented to A: want exit 1 %s, got %s", wire.SlugTokenSpent, res)
	}
	if n := db.count(t, `SELECT COUNT(*) FROM devices WHERE serial = ?`, "REPL-TOK-2"); n != 0 {
		t.Errorf("the refused token enrolled %d devices", n)
	}

	// More devices than a token has uses, racing on both replicas at once:
	// exactly uses of them enroll. Two processes write the one registry
	// concurrently here (on SQLite, one file under cross-process locking).
	const uses, racers = 2, 6
	race := ca.mintToken(t, b, "--uses", strconv.Itoa(uses))
	results := make([]result, racers)
	errs := make([]error, racers)
	var wg sync.WaitGroup
	for i := range racers {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			sn := fmt.Sprintf("REPL-RACE-%d", i)
			results[i], errs[i] = runE(t, nil, enrollBin, "--ca", s.URL, "--fingerprint", ca.Fingerprint, "--token", race.Token,
				"--dir", filepath.Join(t.TempDir(), sn), "--serial", sn, "--mac", fmt.Sprintf("02:00:00:00:0d:%02x", i),
				"--tpm", "none", "--timeout", "30s")
		})
	}
	wg.Wait()
	enrolled := 0
	for i, res := range results {
		switch {
		case errs[i] != nil:
			t.Errorf("racer %d: %v", i, errs[i])
		case res.code == 0:
			enrolled++
		case res.code != 1 || !strings.Contains(res.stderr, wire.SlugTokenSpent):
			t.Errorf("racer %d: want success or %s, got %s", i, wire.SlugTokenSpent, res)
		}
	}
	if enrolled != uses {
		t.Errorf("%d devices enrolled on two replicas with a %d-use token, want %d", enrolled, uses, uses)
	}
	if n := db.count(t, `SELECT COUNT(*) FROM devices WHERE serial LIKE 'REPL-RACE-%'`); n != uses {
		t.Errorf("%d racing devices recorded, want %d", n, uses)
	}
	if n := db.count(t, `SELECT uses_left FROM tokens WHERE id = ?`, race.ID); n != 0 {
		t.Errorf("raced token has %d uses left, want 0", n)
	}

	ca.auditVerify(t)
}

// verifyIssued checks an enrollment reply: the leaf chains through the
// reply's intermediates to roots for client authentication and certifies
// pub. It returns the leaf.
func verifyIssued(t *testing.T, resp *wire.EnrollResponse, roots *x509.CertPool, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	parse := func(p string) *x509.Certificate {
		blk, rest := pem.Decode([]byte(p))
		if blk == nil || blk.Type != "CERTIFICATE" || strings.TrimSpace(string(rest)) != "" {
			t.Fatalf("not one PEM certificate: %q", p)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	leaf := parse(resp.Certificate)
	inters := x509.NewCertPool()
	for _, p := range resp.Chain {
		inters.AddCert(parse(p))
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("issued certificate does not chain to the CA root: %v", err)
	}
	if k, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(pub) {
		t.Fatal("issued certificate does not certify the TPM key")
	}
	return leaf
}

// postJSON posts v as JSON and returns the status and body.
func postJSON(t *testing.T, hc *http.Client, url string, v any) (int, []byte) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return resp.StatusCode, body
}

// requireProblem fails unless the reply is the problem slug with status.
func requireProblem(t *testing.T, what string, code int, body []byte, status int, slug string) {
	t.Helper()
	var p wire.Problem
	if err := json.Unmarshal(body, &p); err != nil || code != status || p.Slug() != slug {
		t.Errorf("%s: want %d %s, got %d %s", what, status, slug, code, body)
	}
}

// regDB is raw SQL on the registry; queries use ?, rewritten to $n for
// PostgreSQL.
type regDB struct {
	*sql.DB
	pg bool
}

func (d *regDB) query(q string) string {
	if !d.pg {
		return q
	}
	var sb strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			sb.WriteString("$" + strconv.Itoa(n))
			continue
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

func (d *regDB) count(t *testing.T, q string, args ...any) int {
	t.Helper()
	var n int
	if err := d.QueryRow(d.query(q), args...).Scan(&n); err != nil {
		t.Fatalf("%s %v: %v", q, args, err)
	}
	return n
}

func (d *regDB) bool(t *testing.T, q string, args ...any) bool {
	t.Helper()
	var v bool
	if err := d.QueryRow(d.query(q), args...).Scan(&v); err != nil {
		t.Fatalf("%s %v: %v", q, args, err)
	}
	return v
}

// freshPostgresDB creates an empty database on the server of dsn (key=value
// form) and returns dsn with dbname set to it. The database is dropped when
// the test ends, after the servers started later have stopped.
func freshPostgresDB(t *testing.T, dsn string) string {
	t.Helper()
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	name := "devpki_e2e_replicas_" + hex.EncodeToString(rnd[:])
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec("DROP DATABASE " + name + " WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	var kept []string
	for _, f := range strings.Fields(dsn) {
		if !strings.HasPrefix(f, "dbname=") {
			kept = append(kept, f)
		}
	}
	return strings.Join(append(kept, "dbname="+name), " ")
}

// usePostgres points ca's registry at the PostgreSQL database dsn. `ca init`
// writes only SQLite configurations, so the db section of ca.yaml is
// rewritten here and the records `ca init` made — the first admin and its
// certificate, the CA's TLS certificate — are recorded in the new database
// as `ca init` records them. The SQLite file is deleted, so nothing can
// fall back to it.
func usePostgres(t *testing.T, ca *testCA, dsn string) {
	t.Helper()
	ctx := context.Background()
	cfg, err := os.ReadFile(ca.Config)
	if err != nil {
		t.Fatal(err)
	}
	const sqliteDB = "\ndb:\n    driver: sqlite\n    dsn: registry.db\n"
	if !bytes.Contains(cfg, []byte(sqliteDB)) {
		t.Fatalf("ca.yaml from ca init has no SQLite db section:\n%s", cfg)
	}
	cfg = bytes.Replace(cfg, []byte(sqliteDB), []byte(fmt.Sprintf("\ndb:\n    driver: postgres\n    dsn: %s\n", strconv.Quote(dsn))), 1)
	if err := os.WriteFile(ca.Config, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(ca.DB + f); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}

	st, err := sqlstore.Open(ctx, sqlstore.Options{Driver: sqlstore.DriverPostgres, DSN: dsn})
	if err != nil {
		t.Fatalf("open registry on PostgreSQL: %v", err)
	}
	defer st.Close()
	tenant, err := st.GetTenant(ctx, registry.DefaultTenant)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	who := provision.SystemActor("init", tenant.ID)
	srvCert := readCerts(t, filepath.Join(ca.Dir, "server.crt"))[0]
	if err := provision.RecordIssued(ctx, st, who, srvCert, registry.KindServer, tenant.ID, now); err != nil {
		t.Fatal(err)
	}
	admCert := readCerts(t, filepath.Join(ca.Dir, "admin.crt"))[0]
	if err := provision.PutAdmin(ctx, st, who, &registry.Admin{Name: admCert.Subject.CommonName, TenantID: tenant.ID, Role: registry.RoleAdmin, Super: true, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := provision.RecordIssued(ctx, st, who, admCert, registry.KindAdmin, tenant.ID, now); err != nil {
		t.Fatal(err)
	}
}
