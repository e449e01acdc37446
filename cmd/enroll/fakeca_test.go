package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
)

const testToken = "tok-123"

// fakeCA serves /v1/ca/roots and /v1/enroll over TLS with a real throwaway CA.
// Scripted replies, when queued, answer /v1/enroll before real issuance.
type fakeCA struct {
	CA          *pkitest.TestCA
	Srv         *httptest.Server
	RenewHits   atomic.Int32
	issuer      *pki.Issuer // signs; f.CA.Issuer unless UseClock
	csrKeys     []string    // SubjectPublicKeyInfo of every enroll CSR, hex
	RekeyNeeded atomic.Bool // answer same-key renewals with 409 rekey-required
	RootsHits   atomic.Int32
	RootsFail   atomic.Int32 // answer this many /v1/ca/roots with 503 first
	EnrollHits  atomic.Int32
	mu          sync.Mutex
	script      []func(http.ResponseWriter)
	lastSerial  string
	lastMACs    []string
	issuedCerts int
	estScript   map[string][]estReply // EST operation → scripted answers (est_test.go)
	ESTHits     map[string]int
	ESTStrict   atomic.Bool // simplereenroll wants the certificate's exact Subject and SAN
	estAuth     []string    // Authorization headers of simpleenroll
}

func newFakeCA(t *testing.T) *fakeCA {
	t.Helper()
	f := &fakeCA{CA: pkitest.NewCA(t)}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := f.CA.Issuer.IssueServer(context.Background(), &pki.ServerRequest{
		PublicKey: key.Public(), CommonName: "ca.test",
		DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1).To4()},
	})
	if err != nil {
		t.Fatal(err)
	}
	chain := [][]byte{srvCert.Certificate.Raw}
	for _, c := range srvCert.Chain {
		chain = append(chain, c.Raw)
	}
	f.Srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.Srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: chain, PrivateKey: key}},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    f.CA.Roots(),
	}
	f.Srv.StartTLS()
	t.Cleanup(f.Srv.Close)
	f.issuer = f.CA.Issuer
	return f
}

// UseClock makes the fake CA issue and check client certificates on now's
// clock, for tests that move time. Call it before the first request.
func (f *fakeCA) UseClock(t *testing.T, now func() time.Time) {
	t.Helper()
	iss, err := pki.NewIssuer(pki.IssuerOptions{CA: f.CA.CA, TrustDomain: pkitest.TrustDomain, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	f.issuer = iss
	f.Srv.TLS.Time = now
}

// Then queues scripted replies to the next enroll requests.
func (f *fakeCA) Then(replies ...func(http.ResponseWriter)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script = append(f.script, replies...)
}

func (f *fakeCA) Fingerprint() string { return pki.Fingerprint(f.CA.CA.Root) }

func (f *fakeCA) serve(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/v1/ca/roots":
		f.RootsHits.Add(1)
		if f.RootsFail.Add(-1) >= 0 {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/pem-certificate-chain")
		w.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.CA.CA.Root.Raw}))
	case "/v1/enroll":
		f.EnrollHits.Add(1)
		f.recordKey(r)
		f.enroll(w, r)
	case "/v1/renew":
		f.RenewHits.Add(1)
		f.renew(w, r)
	case "/v1/enroll/tpm/challenge":
		// This fake CA does not verify TPMs, like a CA without tpm config.
		problem(http.StatusNotFound, "tpm-disabled", "TPM attestation enrollment is not enabled")(w)
	default:
		if strings.HasPrefix(r.URL.Path, "/.well-known/est/") {
			f.est(w, r) // est_test.go
			return
		}
		http.NotFound(w, r)
	}
}

func (f *fakeCA) enroll(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	if len(f.script) > 0 {
		reply := f.script[0]
		f.script = f.script[1:]
		f.mu.Unlock()
		reply(w)
		return
	}
	f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+testToken {
		problem(http.StatusUnauthorized, "token-invalid", "unknown token")(w)
		return
	}
	var req wire.EnrollRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
		problem(http.StatusBadRequest, "bad-csr", err.Error())(w)
		return
	}
	csr, err := pki.ParseCSRPEM([]byte(req.CSR))
	if err != nil {
		problem(http.StatusBadRequest, "bad-csr", err.Error())(w)
		return
	}
	claims, err := pki.CSRPolicy{}.Check(csr)
	if err != nil {
		problem(http.StatusBadRequest, "bad-csr", err.Error())(w)
		return
	}
	iss, err := f.issuer.IssueDevice(r.Context(), &pki.DeviceRequest{
		Identity:  pki.Identity{DeviceID: "dev-" + strings.ToLower(claims.Serial), Tenant: "acme", Serial: claims.Serial, MACs: claims.MACs},
		PublicKey: claims.PublicKey,
	})
	if err != nil {
		problem(http.StatusInternalServerError, "internal", err.Error())(w)
		return
	}
	f.mu.Lock()
	f.lastSerial, f.lastMACs = claims.Serial, claims.MACs
	f.issuedCerts++
	f.mu.Unlock()
	f.writeIssued(w, iss)
}

func (f *fakeCA) writeIssued(w http.ResponseWriter, iss *pki.Issued) {
	resp := wire.EnrollResponse{
		DeviceID:    iss.Certificate.Subject.CommonName,
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: iss.Certificate.Raw})),
		RenewAfter:  iss.Certificate.NotAfter.Add(-10 * 24 * time.Hour),
	}
	for _, c := range iss.Chain {
		resp.Chain = append(resp.Chain, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(resp)
}

// problem replies with an RFC 9457 body; hdr are extra header name/value pairs.
func problem(status int, slug, detail string, hdr ...string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(wire.Problem{Type: wire.ProblemTypePrefix + slug, Title: http.StatusText(status), Status: status, Detail: detail})
	}
}

// harness is a config with a fake clock whose Sleep advances it and records delays.
type harness struct {
	cfg            config
	stdout, stderr bytes.Buffer
	mu             sync.Mutex
	now            time.Time
	sleeps         []time.Duration
}

func newHarness(t *testing.T, f *fakeCA) *harness {
	h := &harness{now: time.Now()}
	h.cfg = config{
		CA:          f.Srv.URL,
		Fingerprint: f.Fingerprint(),
		Token:       testToken,
		Dir:         t.TempDir() + "/state",
		Serial:      "SN-0001",
		MACs:        []string{"AA:BB:CC:00:11:22"},
		TPM:         "none",
		Timeout:     5 * time.Minute,
		Stdout:      &h.stdout,
		Stderr:      &h.stderr,
		Now: func() time.Time {
			h.mu.Lock()
			defer h.mu.Unlock()
			return h.now
		},
		Sleep: func(_ context.Context, d time.Duration) error {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.sleeps = append(h.sleeps, d)
			h.now = h.now.Add(d)
			return nil
		},
		Jitter: func(ceiling time.Duration) time.Duration { return ceiling / 2 },
	}
	return h
}

func (h *harness) run() error { return runEnroll(context.Background(), h.cfg) }

// renew answers POST /v1/renew like the CA: the verified client certificate
// is the credential; an empty body renews its key, a CSR re-keys.
func (f *fakeCA) renew(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	if len(f.script) > 0 {
		reply := f.script[0]
		f.script = f.script[1:]
		f.mu.Unlock()
		reply(w)
		return
	}
	f.mu.Unlock()
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		problem(http.StatusUnauthorized, "unauthorized", "client certificate required")(w)
		return
	}
	leaf := r.TLS.VerifiedChains[0][0]
	var req wire.RenewRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
		problem(http.StatusBadRequest, "bad-request", err.Error())(w)
		return
	}
	pub := leaf.PublicKey
	if req.CSR == "" && f.RekeyNeeded.Load() {
		problem(http.StatusConflict, wire.SlugRekeyRequired, "an admin asked for a new key")(w)
		return
	}
	if req.CSR != "" {
		csr, err := pki.ParseCSRPEM([]byte(req.CSR))
		if err != nil {
			problem(http.StatusBadRequest, "bad-csr", err.Error())(w)
			return
		}
		claims, err := pki.CSRPolicy{}.Check(csr)
		if err != nil || claims.Serial != leaf.Subject.SerialNumber {
			problem(http.StatusBadRequest, "bad-csr", fmt.Sprintf("CSR for another identity: %v", err))(w)
			return
		}
		pub = claims.PublicKey
	}
	id, err := pki.DeviceIdentity(leaf, pkitest.TrustDomain)
	if err != nil {
		problem(http.StatusForbidden, "forbidden", err.Error())(w)
		return
	}
	iss, err := f.issuer.IssueDevice(r.Context(), &pki.DeviceRequest{Identity: *id, PublicKey: pub})
	if err != nil {
		problem(http.StatusInternalServerError, "internal", err.Error())(w)
		return
	}
	f.writeIssued(w, iss)
}

// recordKey notes the public key of an enroll request's CSR and puts the
// body back for the handler.
func (f *fakeCA) recordKey(r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	r.Body = io.NopCloser(bytes.NewReader(body))
	var req wire.EnrollRequest
	if json.Unmarshal(body, &req) != nil {
		return
	}
	if csr, err := pki.ParseCSRPEM([]byte(req.CSR)); err == nil {
		f.mu.Lock()
		f.csrKeys = append(f.csrKeys, fmt.Sprintf("%x", csr.RawSubjectPublicKeyInfo))
		f.mu.Unlock()
	}
}
