package api_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"devpki/api"
	"devpki/api/wire"
	"devpki/pkg/metrics"
	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/registry/sqlstore"
)

// fixture is the whole API served over real TLS on loopback: a pkitest CA, a
// SQLite registry in t.TempDir(), the provision service and api.New, wired
// as cmd/ca/serve.go wires them.
type fixture struct {
	t         testing.TB
	ca        *pkitest.TestCA
	store     *sqlstore.Store
	db        *sql.DB // read-only view of the same SQLite file, for raw counts
	srv       *httptest.Server
	url       string
	client    *http.Client // trusts the root, presents no client certificate
	now       time.Time
	tenant    *registry.Tenant // the default tenant
	rev       *provision.Revocation
	admin     *provision.Admin
	ocsp      *pki.OCSPResponder
	prov      *provision.Service
	attestors provision.Attestors
	// accessLog holds the server's access log lines (JSON).
	accessLog syncBuffer
	// metrics counts what the service and the API decide (wired as cmd/ca
	// wires it), served at GET /metrics.
	metrics *metrics.Metrics

	storeClosed atomic.Bool
}

// mac is the MAC every good test CSR carries.
const mac = "02:00:00:00:00:01"

func newFixture(t testing.TB) *fixture {
	t.Helper()
	return newFixtureTPM(t, nil)
}

// newFixtureTPM is newFixture with TPM attestation enrollment configured by
// tpm (nil: disabled).
func newFixtureTPM(t testing.TB, tpm *provision.TPMConfig) *fixture {
	t.Helper()
	return newFixtureDoors(t, tpm, false)
}

// newFixtureIDevID is newFixture with the factory IDevID door open (the
// real provision.IDevIDAttestor, as cmd/ca wires it).
func newFixtureIDevID(t testing.TB) *fixture {
	t.Helper()
	return newFixtureDoors(t, nil, true)
}

func newFixtureDoors(t testing.TB, tpm *provision.TPMConfig, idevid bool) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{t: t, ca: pkitest.NewCA(t), now: time.Now(), metrics: metrics.New(metrics.Options{})}

	dbPath := filepath.Join(t.TempDir(), "registry.db")
	store, err := sqlstore.Open(ctx, sqlstore.Options{DSN: dbPath, Observer: f.metrics})
	if err != nil {
		t.Fatal(err)
	}
	f.store = store
	t.Cleanup(func() { store.Close() })
	f.db, err = sql.Open("sqlite3", "file:"+dbPath+"?mode=ro&_query_only=on&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.db.Close() })
	if f.tenant, err = store.GetTenant(ctx, registry.DefaultTenant); err != nil {
		t.Fatal(err)
	}

	prov, err := provision.New(provision.Config{
		Store: store, Issuer: f.ca.Issuer, TrustDomain: pkitest.TrustDomain,
		// RSA is allowed so that RSA-1024 and SHA-1 are refused for those
		// reasons, not for being RSA.
		Policy: pki.CSRPolicy{AllowRSA: true},
		TPM:    tpm,
		// Tenants are read at every enrollment, so a policy change a test
		// makes applies at once.
		TenantTTL: -1,
		Metrics:   f.metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	if f.ocsp, err = pki.NewOCSPResponder(ctx, pki.OCSPResponderOptions{CA: f.ca.CA}); err != nil {
		t.Fatal(err)
	}
	f.rev, err = provision.NewRevocation(provision.RevocationConfig{
		Store: store, CRLSigner: f.ca.CA, OCSP: f.ocsp, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Metrics: f.metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	ownCA := []*x509.Certificate{f.ca.CA.Root, f.ca.CA.Intermediate}
	f.admin, err = provision.NewAdmin(provision.AdminConfig{
		Store: store, TrustDomain: pkitest.TrustDomain, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), CA: ownCA,
		Issuer: f.ca.Issuer, Revoker: f.rev,
	})
	if err != nil {
		t.Fatal(err)
	}
	attestors := provision.Attestors{Token: provision.TokenAttestor{Store: store}}
	if idevid {
		attestors.IDevID = provision.IDevIDAttestor{Store: store, CA: ownCA}
	}
	if tpm != nil {
		attestors.TPM = provision.TPMAttestor{Challenger: tpm.Challenger, Store: store}
	}
	f.prov, f.attestors = prov, attestors
	handler, err := api.New(api.Config{
		Store: store, Provision: prov, Admin: f.admin, Attestors: attestors,
		Root: f.ca.CA.Root, Chain: f.ca.Issuer.Chain(),
		TrustDomain: pkitest.TrustDomain, Revocation: f.rev,
		Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		AccessLog: slog.New(slog.NewJSONHandler(&f.accessLog, nil)),
		Metrics:   f.metrics, MetricsHandler: f.metrics.Handler(),
	})
	if err != nil {
		t.Fatal(err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := f.ca.Issuer.IssueServer(ctx, &pki.ServerRequest{
		PublicKey: key.Public(), CommonName: "devpki test CA", DNSNames: []string{"localhost"},
		IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(handler)
	srv.Config.ReadHeaderTimeout = 10 * time.Second
	srv.Config.MaxHeaderBytes = 16 << 10
	srv.TLS = api.TLSConfig(tlsCert(iss, key), false)
	srv.StartTLS()
	f.srv, f.url = srv, srv.URL
	t.Cleanup(srv.Close)
	f.client = f.newClient(nil)

	// Registered last, so it runs first: every test ends with an intact
	// audit chain.
	t.Cleanup(func() {
		if f.storeClosed.Load() {
			return
		}
		if err := store.VerifyAudit(context.Background()); err != nil {
			t.Errorf("audit chain: %v", err)
		}
	})
	return f
}

// tlsCert is an issued certificate with its chain, as a TLS identity.
func tlsCert(iss *pki.Issued, key crypto.Signer) tls.Certificate {
	c := tls.Certificate{PrivateKey: key, Leaf: iss.Certificate, Certificate: [][]byte{iss.Certificate.Raw}}
	for _, ch := range iss.Chain {
		c.Certificate = append(c.Certificate, ch.Raw)
	}
	return c
}

// newClient returns a client with its own transport that trusts the CA root
// and, when cert is not nil, always presents it (whatever CAs the server
// names), so that the server is the one to judge it.
func (f *fixture) newClient(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: f.ca.Roots(), MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: false}
	f.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// oneShotClient makes a client whose every request is its own TCP and TLS
// connection.
func (f *fixture) oneShotClient() *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.ca.Roots(), MinVersion: tls.VersionTLS12}, DisableKeepAlives: true}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

// mint mints a bootstrap token at f.now.
func (f *fixture) mint(spec provision.TokenSpec) string {
	f.t.Helper()
	return f.mintAt(f.now, spec)
}

func (f *fixture) mintAt(now time.Time, spec provision.TokenSpec) string {
	f.t.Helper()
	tok, _, err := provision.MintToken(context.Background(), f.store, now, spec)
	if err != nil {
		f.t.Fatal(err)
	}
	return tok
}

// macFor is a MAC of the device with serial's own: a MAC belongs to one
// active device per tenant, so distinct test devices need distinct MACs.
func macFor(serial string) string {
	h := sha256.Sum256([]byte(serial))
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", h[0], h[1], h[2], h[3], h[4])
}

// csr returns a good P-256 enrollment CSR PEM for serial (with macFor(serial) when no
// macs are given).
func (f *fixture) csr(serial string, macs ...string) []byte {
	f.t.Helper()
	_, _, p := f.keyAndCSR(serial, macs...)
	return p
}

func (f *fixture) keyAndCSR(serial string, macs ...string) (crypto.Signer, *x509.CertificateRequest, []byte) {
	f.t.Helper()
	if len(macs) == 0 {
		macs = []string{macFor(serial)}
	}
	return f.ca.DeviceKeyAndCSR(f.t, serial, macs...)
}

// enrollBody is the JSON body of POST /v1/enroll.
func enrollBody(t testing.TB, csrPEM []byte) []byte {
	t.Helper()
	b, err := json.Marshal(wire.EnrollRequest{CSR: string(csrPEM)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// do sends one request with c; an empty token sends no Authorization.
func (f *fixture) do(c *http.Client, method, path, token, contentType string, body io.Reader) (*http.Response, []byte, error) {
	req, err := http.NewRequest(method, f.url+path, body)
	if err != nil {
		return nil, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// enroll POSTs a good-shaped enrollment and fails the test on transport errors.
func (f *fixture) enroll(token string, csrPEM []byte) (*http.Response, []byte) {
	f.t.Helper()
	resp, b, err := f.do(f.client, http.MethodPost, "/v1/enroll", token, "application/json", bytes.NewReader(enrollBody(f.t, csrPEM)))
	if err != nil {
		f.t.Fatal(err)
	}
	return resp, b
}

// mustEnroll enrolls serial with token and returns the decoded 201 reply and
// the device key.
func (f *fixture) mustEnroll(token, serial string) (*wire.EnrollResponse, crypto.Signer) {
	f.t.Helper()
	key, _, p := f.keyAndCSR(serial)
	resp, b := f.enroll(token, p)
	if resp.StatusCode != http.StatusCreated {
		f.t.Fatalf("enroll %s: %d %s", serial, resp.StatusCode, b)
	}
	var er wire.EnrollResponse
	if err := json.Unmarshal(b, &er); err != nil {
		f.t.Fatalf("enroll %s: decode %s: %v", serial, b, err)
	}
	return &er, key
}

// problemOf checks that resp is an application/problem+json answer with
// status and returns the decoded problem.
func problemOf(t testing.TB, resp *http.Response, body []byte, status int) *wire.Problem {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status %d, want %d; body %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json", ct)
	}
	var p wire.Problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("problem body %q: %v", body, err)
	}
	if p.Status != resp.StatusCode {
		t.Errorf("problem status %d, HTTP status %d", p.Status, resp.StatusCode)
	}
	if !strings.HasPrefix(p.Type, wire.ProblemTypePrefix) || p.Title == "" {
		t.Errorf("problem %+v: want type %s<slug> and a title", p, wire.ProblemTypePrefix)
	}
	return &p
}

// counts are the rows a refused request must not add.
type counts struct{ devices, certs, tokens int }

func (f *fixture) counts() counts {
	f.t.Helper()
	var c counts
	for _, q := range []struct {
		table string
		dst   *int
	}{{"devices", &c.devices}, {"certificates", &c.certs}, {"tokens", &c.tokens}} {
		if err := f.db.QueryRow("SELECT COUNT(*) FROM " + q.table).Scan(q.dst); err != nil {
			f.t.Fatalf("count %s: %v", q.table, err)
		}
	}
	return c
}

// usesLeft is the stored UsesLeft of token; -1 when the store has no such
// token.
func (f *fixture) usesLeft(token string) int {
	f.t.Helper()
	tok, err := f.store.GetToken(context.Background(), provision.HashToken(token))
	if err != nil {
		return -1
	}
	return tok.UsesLeft
}

// device returns the device enrolled under serial in the default tenant, or nil.
func (f *fixture) device(serial string) *registry.Device {
	f.t.Helper()
	d, err := f.store.GetDeviceBySerial(context.Background(), f.tenant.ID, serial)
	if err != nil {
		return nil
	}
	return d
}

// lastSeq is the Seq of the newest audit event.
func (f *fixture) lastSeq() int64 {
	f.t.Helper()
	evs := f.auditSince(0)
	if len(evs) == 0 {
		return 0
	}
	return evs[len(evs)-1].Seq
}

// refusals returns every anonymous refusal aggregate.
func (f *fixture) refusals() []*registry.Refusal {
	f.t.Helper()
	var all []*registry.Refusal
	for after := int64(0); ; {
		rs, err := f.store.ListRefusals(context.Background(), after, 500)
		if err != nil {
			f.t.Fatal(err)
		}
		all = append(all, rs...)
		if len(rs) < 500 {
			return all
		}
		after = rs[len(rs)-1].ID
	}
}

// refusalHits counts the anonymous refusals of action ("" for any).
func (f *fixture) refusalHits(action string) int64 {
	f.t.Helper()
	var n int64
	for _, r := range f.refusals() {
		if action == "" || r.Action == action {
			n += r.Count
		}
	}
	return n
}

func (f *fixture) auditSince(seq int64) []*registry.AuditEvent {
	f.t.Helper()
	var all []*registry.AuditEvent
	for {
		evs, err := f.store.ListAudit(context.Background(), seq, 500)
		if err != nil {
			f.t.Fatal(err)
		}
		all = append(all, evs...)
		if len(evs) < 500 {
			return all
		}
		seq = evs[len(evs)-1].Seq
	}
}

// adminCert issues a client certificate carrying the admin URI of name in
// tenant. When ca is the fixture's CA it records it in the registry as an
// admin certificate with status (empty means active); when role is not
// empty it makes name an admin of the default tenant with role.
func (f *fixture) adminCert(ca *pkitest.TestCA, tenant, name string, role registry.Role, status registry.CertStatus) tls.Certificate {
	f.t.Helper()
	ctx := context.Background()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.t.Fatal(err)
	}
	iss, err := ca.Issuer.IssueClient(ctx, &pki.ClientRequest{
		PublicKey: key.Public(), CommonName: name,
		URIs: []*url.URL{pki.AdminURI(pkitest.TrustDomain, tenant, name)},
	})
	if err != nil {
		f.t.Fatal(err)
	}
	if ca == f.ca {
		rec := provision.CertificateRecord(iss.Certificate, registry.KindAdmin, f.tenant.ID, "", time.Now())
		if status != "" {
			rec.Status = status
		}
		if status == registry.CertRevoked {
			at := time.Now()
			rec.RevokedAt, rec.RevocationReason = &at, registry.ReasonKeyCompromise
		}
		if err := f.store.RecordCertificate(ctx, rec, &registry.AuditEvent{
			TenantID: f.tenant.ID, Actor: "system:test", Action: "cert.issue", Target: rec.Serial, Result: registry.ResultOK,
		}); err != nil {
			f.t.Fatal(err)
		}
	}
	if role != "" {
		if err := f.store.PutAdmin(ctx, &registry.Admin{Name: name, TenantID: f.tenant.ID, Role: role}, &registry.AuditEvent{
			TenantID: f.tenant.ID, Actor: "system:test", Action: "admin.put", Target: name, Result: registry.ResultOK,
		}); err != nil {
			f.t.Fatal(err)
		}
	}
	return tlsCert(iss, key)
}

// superAdminCert is adminCert for a super-admin with role admin, whose
// home tenant is the default tenant.
func (f *fixture) superAdminCert(name string) tls.Certificate {
	f.t.Helper()
	c := f.adminCert(f.ca, "default", name, "", "")
	if err := f.store.PutAdmin(context.Background(), &registry.Admin{Name: name, TenantID: f.tenant.ID, Role: registry.RoleAdmin, Super: true},
		&registry.AuditEvent{TenantID: f.tenant.ID, Actor: "system:test", Action: "admin.put", Target: name, Result: registry.ResultOK}); err != nil {
		f.t.Fatal(err)
	}
	return c
}

// keyPEM is key as an unencrypted PKCS #8 PEM block.
func keyPEM(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// parsePEMCerts parses a PEM bundle holding only certificates.
func parsePEMCerts(t testing.TB, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			t.Fatalf("PEM block %q in a certificate bundle", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if len(bytes.TrimSpace(b)) != 0 {
		t.Fatalf("trailing data after PEM certificates: %q", b)
	}
	return out
}
