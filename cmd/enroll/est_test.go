package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/tpm/swtpmtest"
)

// est answers /.well-known/est[/acme]/... like an RFC 7030 server in front
// of the fake CA: PKCS#7 certs-only in base64 lines, text/plain errors.
func (f *fakeCA) est(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, "/.well-known/est/")
	op := strings.TrimPrefix(rest, "acme/")
	if strings.Contains(op, "/") {
		http.Error(w, "unknown label", http.StatusNotFound)
		return
	}
	f.mu.Lock()
	if f.ESTHits == nil {
		f.ESTHits = map[string]int{}
	}
	f.ESTHits[op]++
	if q := f.estScript[op]; len(q) > 0 {
		f.estScript[op] = q[1:]
		f.mu.Unlock()
		q[0](w, r)
		return
	}
	f.mu.Unlock()
	switch op {
	case "cacerts":
		writeCertsOnly(w, f.CA.CA.Intermediate, f.CA.CA.Root)
	case "simpleenroll", "simplereenroll":
		f.estEnroll(w, r, op == "simplereenroll")
	default:
		http.Error(w, op+" is not implemented", http.StatusNotImplemented)
	}
}

func (f *fakeCA) estEnroll(w http.ResponseWriter, r *http.Request, reenroll bool) {
	if r.Header.Get("Content-Type") != "application/pkcs10" {
		http.Error(w, "want application/pkcs10", http.StatusUnsupportedMediaType)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	der, err := base64.StdEncoding.DecodeString(string(body))
	if err != nil {
		http.Error(w, "not base64", http.StatusBadRequest)
		return
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		http.Error(w, "bad CSR: "+err.Error(), http.StatusBadRequest)
		return
	}
	if reenroll && f.ESTStrict.Load() {
		// A strict RFC 7030 §4.2.2 server: the CSR repeats the current
		// certificate's Subject and SAN, whatever they hold.
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "simplereenroll needs the current certificate", http.StatusUnauthorized)
			return
		}
		leaf := r.TLS.VerifiedChains[0][0]
		if csr.CheckSignature() != nil || !sameNames(der, leaf) {
			http.Error(w, "the CSR's Subject and SubjectAltName differ from the certificate's", http.StatusBadRequest)
			return
		}
		id, err := pki.DeviceIdentity(leaf, pkitest.TrustDomain)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		iss, err := f.issuer.IssueDevice(r.Context(), &pki.DeviceRequest{Identity: *id, PublicKey: csr.PublicKey})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeCertsOnly(w, append([]*x509.Certificate{iss.Certificate}, iss.Chain...)...)
		return
	}
	claims, err := pki.CSRPolicy{}.Check(csr)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var id *pki.Identity
	if reenroll {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "simplereenroll needs the current certificate", http.StatusUnauthorized)
			return
		}
		leaf := r.TLS.VerifiedChains[0][0]
		if claims.Serial != leaf.Subject.SerialNumber {
			http.Error(w, "CSR for another serial", http.StatusBadRequest)
			return
		}
		if f.RekeyNeeded.Load() && csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
			http.Error(w, "rekey-required: an admin asked for a new key", http.StatusConflict)
			return
		}
		if id, err = pki.DeviceIdentity(leaf, pkitest.TrustDomain); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
	} else {
		user, pass, basic := r.BasicAuth()
		f.mu.Lock()
		f.estAuth = append(f.estAuth, r.Header.Get("Authorization"))
		f.mu.Unlock()
		if !(basic && user == claims.Serial && pass == testToken) && r.Header.Get("Authorization") != "Bearer "+testToken {
			w.Header().Set("WWW-Authenticate", `Basic realm="est"`)
			http.Error(w, "bootstrap token invalid", http.StatusUnauthorized)
			return
		}
		id = &pki.Identity{DeviceID: "dev-" + strings.ToLower(claims.Serial), Tenant: "acme", Serial: claims.Serial, MACs: claims.MACs}
	}
	iss, err := f.issuer.IssueDevice(r.Context(), &pki.DeviceRequest{Identity: *id, PublicKey: claims.PublicKey})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	f.mu.Lock()
	f.issuedCerts++
	f.mu.Unlock()
	writeCertsOnly(w, append([]*x509.Certificate{iss.Certificate}, iss.Chain...)...)
}

// thenEST queues scripted answers to the next requests of an EST operation.
func (f *fakeCA) thenEST(op string, replies ...estReply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.estScript == nil {
		f.estScript = map[string][]estReply{}
	}
	f.estScript[op] = append(f.estScript[op], replies...)
}

func (f *fakeCA) estHits(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ESTHits[op]
}

func certsOnlyDER(certs ...*x509.Certificate) []byte {
	var raw []byte
	for _, c := range certs {
		raw = append(raw, c.Raw...)
	}
	der, err := pkcs7.DegenerateCertificate(raw)
	if err != nil {
		panic(err)
	}
	return der
}

// estReply is a scripted answer to an EST request.
type estReply func(w http.ResponseWriter, r *http.Request)

func writeCertsOnly(w http.ResponseWriter, certs ...*x509.Certificate) {
	estAnswer("application/pkcs7-mime; smime-type=certs-only", base64Lines(certsOnlyDER(certs...)))(w, nil)
}

func base64Lines(der []byte) string {
	s := base64.StdEncoding.EncodeToString(der)
	var b strings.Builder
	for len(s) > 64 {
		b.WriteString(s[:64] + "\r\n")
		s = s[64:]
	}
	b.WriteString(s + "\r\n")
	return b.String()
}

func estAnswer(contentType, body string, hdr ...string) estReply {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		w.Header().Set("Content-Type", contentType)
		w.Write([]byte(body))
	}
}

func estHarness(t *testing.T, f *fakeCA) *harness {
	h := newHarness(t, f)
	h.cfg.Protocol, h.cfg.ESTLabel = protocolEST, "acme"
	return h
}

// TestESTEnrollRenewRekey: enroll over EST, then renew, re-key and a forced
// re-key over simplereenroll, each installed by replaceIdentity.
func TestESTEnrollRenewRekey(t *testing.T) {
	f := newFakeCA(t)
	h := estHarness(t, f)
	if err := h.run(); err != nil {
		t.Fatalf("enroll: %v\n%s", err, h.stderr.String())
	}
	if f.EnrollHits.Load() != 0 || f.RootsHits.Load() != 0 || f.estHits("cacerts") != 1 || f.estHits("simpleenroll") != 1 {
		t.Fatalf("requests: native enroll %d, roots %d, EST %v", f.EnrollHits.Load(), f.RootsHits.Load(), f.ESTHits)
	}
	if want := "Basic " + base64.StdEncoding.EncodeToString([]byte("SN-0001:"+testToken)); len(f.estAuth) != 1 || f.estAuth[0] != want {
		t.Errorf("Authorization %q, want %q", f.estAuth, want)
	}
	enrolled := h.load(t)
	if len(enrolled.Chain) != 1 || !enrolled.Chain[0].Equal(f.CA.CA.Intermediate) || !enrolled.Root.Equal(f.CA.CA.Root) {
		t.Fatalf("chain %d, root %s", len(enrolled.Chain), enrolled.Root.Subject)
	}
	var ci caInfo
	b, _ := os.ReadFile(filepath.Join(h.cfg.Dir, caFile))
	if err := json.Unmarshal(b, &ci); err != nil || ci.Protocol != protocolEST || ci.ESTLabel != "acme" || ci.URL != f.Srv.URL {
		t.Fatalf("%s = %s (%v)", caFile, b, err)
	}
	// Run again: nothing to do, no request.
	if err := h.run(); err != nil || f.estHits("cacerts") != 1 {
		t.Fatalf("second run: %v, cacerts %d", err, f.estHits("cacerts"))
	}

	a := &agentFlags{cfg: h.cfg}
	a.cfg.Protocol, a.cfg.ESTLabel = "", "" // renew reads them from ca.json
	if err := runRenewCmd(context.Background(), a, nil); err != nil {
		t.Fatalf("renew: %v\n%s", err, h.stderr.String())
	}
	renewed := h.load(t)
	if renewed.Cert.SerialNumber.Cmp(enrolled.Cert.SerialNumber) == 0 || !sameKey(renewed.Key, enrolled.Key) {
		t.Fatal("renewal did not replace the certificate with the same key")
	}
	if f.estHits("simplereenroll") != 1 || f.RenewHits.Load() != 0 {
		t.Fatalf("renewal went to simplereenroll %d, /v1/renew %d", f.estHits("simplereenroll"), f.RenewHits.Load())
	}

	a = &agentFlags{cfg: h.cfg, rekey: true}
	if err := runRenewCmd(context.Background(), a, nil); err != nil {
		t.Fatalf("rekey: %v\n%s", err, h.stderr.String())
	}
	rekeyed := h.load(t)
	if sameKey(rekeyed.Key, renewed.Key) || rekeyed.Cert.Subject.String() != enrolled.Cert.Subject.String() {
		t.Fatal("rekey kept the key or changed the subject")
	}

	f.RekeyNeeded.Store(true)
	if err := runRenewCmd(context.Background(), &agentFlags{cfg: h.cfg}, nil); err != nil {
		t.Fatalf("forced rekey: %v\n%s", err, h.stderr.String())
	}
	if forced := h.load(t); sameKey(forced.Key, rekeyed.Key) {
		t.Fatal("the CA required a new key but the key is unchanged")
	}
	if !strings.Contains(h.stderr.String(), "the CA requires a new key") {
		t.Errorf("stderr does not say why it re-keyed:\n%s", h.stderr.String())
	}

	h.stdout.Reset()
	if err := runStatus(context.Background(), &agentFlags{cfg: h.cfg}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h.stdout.String(), "protocol:    est (RFC 7030) at "+f.Srv.URL+", label acme") {
		t.Errorf("status does not show the protocol:\n%s", h.stdout.String())
	}
}

// TestESTReenrollStrictServer: a server that wants the certificate's exact
// Subject and SAN in the simplereenroll CSR (RFC 7030 §4.2.2) refuses the
// enrollment-shaped CSR; the agent retries with the exact names, for a
// renewal and for a re-key.
func TestESTReenrollStrictServer(t *testing.T) {
	f := newFakeCA(t)
	h := estHarness(t, f)
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	f.ESTStrict.Store(true)
	before := h.load(t)
	for _, rekey := range []bool{false, true} {
		if err := runRenewCmd(context.Background(), &agentFlags{cfg: h.cfg, rekey: rekey}, nil); err != nil {
			t.Fatalf("renew (rekey %v): %v\n%s", rekey, err, h.stderr.String())
		}
		after := h.load(t)
		if sameKey(after.Key, before.Key) == rekey || after.Cert.Subject.String() != before.Cert.Subject.String() {
			t.Fatalf("renew (rekey %v): same key %v, subject %s", rekey, sameKey(after.Key, before.Key), after.Cert.Subject)
		}
		before = after
	}
	if f.estHits("simplereenroll") != 4 || !strings.Contains(h.stderr.String(), "retrying with the certificate's exact subject and SAN") {
		t.Fatalf("simplereenroll hits %d; stderr:\n%s", f.estHits("simplereenroll"), h.stderr.String())
	}
}

// TestESTRenewCrashAtEveryStep: an EST renewal is installed by the same
// crash-safe replacement as a native one.
func TestESTRenewCrashAtEveryStep(t *testing.T) {
	for _, step := range []string{stepPrevWritten, stepNextWritten, stepChainMoved, stepKeyMoved, stepCertMoved} {
		t.Run(step, func(t *testing.T) {
			f := newFakeCA(t)
			h := estHarness(t, f)
			if err := h.run(); err != nil {
				t.Fatal(err)
			}
			crash := errors.New("simulated crash")
			err := runRenewCmd(context.Background(), &agentFlags{cfg: h.cfg, rekey: true}, func(s string) error {
				if s == step {
					return crash
				}
				return nil
			})
			if !errors.Is(err, crash) {
				t.Fatalf("rekey: %v, want the simulated crash", err)
			}
			if _, err := recoverIdentity(context.Background(), newKeyring(h.cfg.Dir, ""), h.cfg.Fingerprint, h.cfg.Now(), t.Logf); err != nil {
				t.Fatalf("no usable identity after a crash at %s: %v", step, err)
			}
			if err := runRenewCmd(context.Background(), &agentFlags{cfg: h.cfg}, nil); err != nil {
				t.Fatalf("renewal after the crash: %v", err)
			}
			if f.estHits("simplereenroll") != 2 {
				t.Fatalf("simplereenroll hits %d", f.estHits("simplereenroll"))
			}
		})
	}
}

// TestESTBadCACerts: a bad cacerts answer, or a bundle without the pinned
// root, is a clear permanent error and leaves no state directory at all.
func TestESTBadCACerts(t *testing.T) {
	other := pkitest.NewCA(t)
	tests := []struct {
		name  string
		reply estReply
		want  string
	}{
		{"not base64", estAnswer("application/pkcs7-mime", "this is not base64 <html>"), "not base64"},
		{"wrong content type", estAnswer("text/plain", base64Lines(certsOnlyDER(other.CA.Root))), `Content-Type "text/plain"`},
		{"no certificates", estAnswer("application/pkcs7-mime", base64Lines(certsOnlyDER())), "holds no certificate"},
		{"root not the pinned one", func(w http.ResponseWriter, _ *http.Request) { writeCertsOnly(w, other.CA.Intermediate, other.CA.Root) }, "none of its 2 certificate(s)"},
		{"404 unknown label", estAnswer("text/plain", "no such label"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCA(t)
			h := estHarness(t, f)
			if tt.want == "" {
				h.cfg.ESTLabel = "nosuch"
				tt.want = "404 Not Found: unknown label"
			} else {
				f.thenEST("cacerts", tt.reply)
			}
			err := h.run()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to say %q", err, tt.want)
			}
			if exitCode(err) != exitFailure || len(h.sleeps) != 0 {
				t.Errorf("exit %d after %d retries, want a permanent failure", exitCode(err), len(h.sleeps))
			}
			if _, err := os.Stat(h.cfg.Dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("state directory written: %v", err)
			}
			if f.estHits("simpleenroll") != 0 {
				t.Error("simpleenroll was sent")
			}
		})
	}
}

// TestESTBadEnrollAnswers: a bad simpleenroll answer is refused; no
// certificate and no ca.json are written.
func TestESTBadEnrollAnswers(t *testing.T) {
	other := pkitest.NewCA(t)
	_, otherCSR, _ := other.DeviceKeyAndCSR(t, "SN-0001", "AA:BB:CC:00:11:22")
	foreign, err := other.Issuer.IssueDevice(context.Background(), &pki.DeviceRequest{
		Identity:  pki.Identity{DeviceID: "x", Tenant: "acme", Serial: "SN-0001", MACs: []string{"aabbcc001122"}},
		PublicKey: otherCSR.PublicKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	// otherCA signs the CSR's own key: right key, wrong issuer.
	otherCA := func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		der, _ := base64.StdEncoding.DecodeString(string(body))
		csr, err := x509.ParseCertificateRequest(der)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		iss, err := other.Issuer.IssueDevice(r.Context(), &pki.DeviceRequest{
			Identity:  pki.Identity{DeviceID: "x", Tenant: "acme", Serial: "SN-0001", MACs: []string{"aabbcc001122"}},
			PublicKey: csr.PublicKey,
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeCertsOnly(w, append([]*x509.Certificate{iss.Certificate}, iss.Chain...)...)
	}
	tests := []struct {
		name  string
		reply estReply
		want  string
	}{
		{"not base64", estAnswer("application/pkcs7-mime; smime-type=certs-only", "%%%"), "not base64"},
		{"wrong content type", estAnswer("application/json", `{"certificate":"x"}`), `Content-Type "application/json"`},
		{"no certificates", estAnswer("application/pkcs7-mime; smime-type=certs-only", base64Lines(certsOnlyDER())), "holds no certificate"},
		{"not our key", func(w http.ResponseWriter, _ *http.Request) { writeCertsOnly(w, foreign.Certificate) }, "none for the CSR's key"},
		{"our key, another CA", otherCA, "EST answer refused: certificate"},
		{"401 text", estAnswer("text/plain", "bootstrap token expired", "WWW-Authenticate", "Basic"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCA(t)
			h := estHarness(t, f)
			if tt.want == "" {
				tt.reply = func(w http.ResponseWriter, _ *http.Request) {
					w.Header().Set("WWW-Authenticate", "Basic")
					http.Error(w, "bootstrap token expired", http.StatusUnauthorized)
				}
				tt.want = "401 Unauthorized: bootstrap token expired; the EST server refused the request: check the bootstrap token"
			}
			f.thenEST("simpleenroll", tt.reply)
			err := h.run()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to say %q", err, tt.want)
			}
			if exitCode(err) != exitFailure || len(h.sleeps) != 0 {
				t.Errorf("exit %d after %d retries, want a permanent failure", exitCode(err), len(h.sleeps))
			}
			for _, name := range []string{certFile, caFile, rootFile, chainFile} {
				if _, err := os.Stat(filepath.Join(h.cfg.Dir, name)); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s written: %v", name, err)
				}
			}
		})
	}

}

// TestESTEnrollRetries: 503 with Retry-After and 202 (held for approval) are
// waited out; the enrollment then completes with the same key.
func TestESTEnrollRetries(t *testing.T) {
	f := newFakeCA(t)
	h := estHarness(t, f)
	h.cfg.ESTAuth = "bearer"
	f.thenEST("cacerts", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "starting", http.StatusServiceUnavailable) })
	f.thenEST("simpleenroll",
		func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "20")
			http.Error(w, "store unavailable", http.StatusServiceUnavailable)
		},
		func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusAccepted)
		})
	if err := h.run(); err != nil {
		t.Fatalf("enroll: %v\n%s", err, h.stderr.String())
	}
	if f.estHits("simpleenroll") != 3 || f.estHits("cacerts") != 2 {
		t.Fatalf("hits %v", f.ESTHits)
	}
	if len(h.sleeps) != 3 || h.sleeps[1].Seconds() != 20 || h.sleeps[2].Seconds() != 30 {
		t.Errorf("sleeps %v, want backoff then the Retry-After of 20s and 30s", h.sleeps)
	}
	if f.estAuth[len(f.estAuth)-1] != "Bearer "+testToken {
		t.Errorf("Authorization %q", f.estAuth)
	}
}

func TestESTUsageErrors(t *testing.T) {
	f := newFakeCA(t)
	for _, tt := range []struct {
		name string
		edit func(*config)
		want string
	}{
		{"label without est", func(c *config) { c.Protocol, c.ESTLabel = "", "acme" }, "--est-label needs --protocol est"},
		{"unknown protocol", func(c *config) { c.Protocol = "scep" }, `--protocol "scep"`},
		{"bad label", func(c *config) { c.ESTLabel = "a/b" }, "--est-label"},
		{"bad auth", func(c *config) { c.ESTAuth = "digest" }, `--est-auth "digest"`},
		{"no token", func(c *config) { c.Token = "" }, "--protocol est needs a bootstrap token"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := estHarness(t, f)
			tt.edit(&h.cfg)
			err := h.run()
			if exitCode(err) != exitUsage || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v (exit %d), want a usage error saying %q", err, exitCode(err), tt.want)
			}
			if _, err := os.Stat(h.cfg.Dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("state directory written: %v", err)
			}
		})
	}
	if f.estHits("cacerts") != 0 {
		t.Errorf("a usage error reached the server")
	}
}

// TestESTTPM: with --tpm the key is made in the TPM, the CSR and the
// simplereenroll handshake are signed there, and renewals keep it there.
func TestESTTPM(t *testing.T) {
	sw := swtpmtest.Start(t)
	f := newFakeCA(t)
	h := estHarness(t, f)
	h.cfg.TPM = sw.Spec()
	if err := h.run(); err != nil {
		t.Fatalf("enroll: %v\n%s", err, h.stderr.String())
	}
	id := h.load(t)
	if _, ok := id.Key.(*tpmKey); !ok {
		t.Fatalf("key is %T, want a TPM key", id.Key)
	}
	if _, err := os.Stat(filepath.Join(h.cfg.Dir, passwordFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a key password was made for a TPM key: %v", err)
	}
	for _, rekey := range []bool{false, true} {
		if err := runRenewCmd(context.Background(), &agentFlags{cfg: config{Dir: h.cfg.Dir, Timeout: h.cfg.Timeout}, rekey: rekey}, nil); err != nil {
			t.Fatalf("renew (rekey %v): %v", rekey, err)
		}
		next := h.load(t)
		if _, ok := next.Key.(*tpmKey); !ok || sameKey(next.Key, id.Key) == rekey {
			t.Fatalf("renew (rekey %v): key %T, same key %v", rekey, next.Key, sameKey(next.Key, id.Key))
		}
		id = next
	}
	if f.estHits("simplereenroll") != 2 {
		t.Fatalf("simplereenroll hits %d", f.estHits("simplereenroll"))
	}
}

// TestESTAgentRun: 'enroll run --protocol est' enrolls over EST, then renews
// over simplereenroll at two thirds of each lifetime.
func TestESTAgentRun(t *testing.T) {
	f := newFakeCA(t)
	h := estHarness(t, f)
	f.UseClock(t, h.cfg.Now)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sleep := h.cfg.Sleep
	h.cfg.Sleep = func(ctx context.Context, d time.Duration) error {
		if f.estHits("simplereenroll") >= 3 {
			cancel()
			return ctx.Err()
		}
		return sleep(ctx, d)
	}
	a := &agentFlags{cfg: h.cfg, fingerprint: f.Fingerprint()}
	done := make(chan error, 1)
	go func() { done <- runAgent(ctx, a, nil) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v\n%s", err, h.stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("agent did not stop")
	}
	if f.estHits("simpleenroll") != 1 || f.estHits("simplereenroll") != 3 || f.EnrollHits.Load() != 0 || f.RenewHits.Load() != 0 {
		t.Fatalf("EST %v, native enroll %d renew %d", f.ESTHits, f.EnrollHits.Load(), f.RenewHits.Load())
	}
	h.load(t)
}
