package client

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"

	"devpki/pkg/pki"
)

// estServer is an in-process EST server (RFC 7030 answers built with
// smallstep/pkcs7) issuing from ca. reply, when set, answers instead.
type estServer struct {
	t     *testing.T
	ca    *testCA
	label string
	URL   string

	mu       sync.Mutex
	reply    func(w http.ResponseWriter, r *http.Request) bool // true when it answered
	auth     []string                                          // Authorization headers seen on simpleenroll
	peers    []*x509.Certificate                               // TLS client certificates seen on simplereenroll
	reqTypes []string                                          // Content-Type, Content-Transfer-Encoding of POSTs
	bodies   [][]byte
}

func newESTServer(t *testing.T, ca *testCA, label string) *estServer {
	s := &estServer{t: t, ca: ca, label: label}
	srv := startServerTLS(t, &tls.Config{
		Certificates: []tls.Certificate{ca.serverCert(t)},
		ClientAuth:   tls.RequestClientCert,
	}, s)
	s.URL = srv.URL
	return s
}

func certsOnly(t testing.TB, certs ...*x509.Certificate) []byte {
	t.Helper()
	var raw []byte
	for _, c := range certs {
		raw = append(raw, c.Raw...)
	}
	der, err := pkcs7.DegenerateCertificate(raw)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// writeBase64 answers der as base64 in 64-character lines.
func writeBase64(w http.ResponseWriter, contentType string, der []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Transfer-Encoding", "base64")
	s := base64.StdEncoding.EncodeToString(der)
	for len(s) > 64 {
		io.WriteString(w, s[:64]+"\n")
		s = s[64:]
	}
	io.WriteString(w, s+"\n")
}

func (s *estServer) setReply(f func(w http.ResponseWriter, r *http.Request) bool) {
	s.mu.Lock()
	s.reply = f
	s.mu.Unlock()
}

func (s *estServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	reply := s.reply
	s.mu.Unlock()
	if reply != nil && reply(w, r) {
		return
	}
	prefix := "/.well-known/est/"
	if s.label != "" {
		prefix += s.label + "/"
	}
	op, ok := strings.CutPrefix(r.URL.Path, prefix)
	if !ok {
		http.Error(w, "no such label", http.StatusNotFound)
		return
	}
	switch {
	case op == "cacerts" && r.Method == http.MethodGet:
		writeBase64(w, "application/pkcs7-mime", certsOnly(s.t, s.ca.Inter, s.ca.Root))
	case op == "csrattrs" && r.Method == http.MethodGet:
		der, _ := asn1.Marshal([]any{
			asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}, // ecdsa-with-SHA256
			struct {
				Type   asn1.ObjectIdentifier
				Values []asn1.ObjectIdentifier `asn1:"set"`
			}{asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}, []asn1.ObjectIdentifier{{1, 2, 840, 10045, 3, 1, 7}}},
		})
		writeBase64(w, "application/csrattrs", der)
	case (op == "simpleenroll" || op == "simplereenroll") && r.Method == http.MethodPost:
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.reqTypes = append(s.reqTypes, r.Header.Get("Content-Type")+", "+r.Header.Get("Content-Transfer-Encoding"))
		s.bodies = append(s.bodies, body)
		if op == "simpleenroll" {
			s.auth = append(s.auth, r.Header.Get("Authorization"))
		} else if len(r.TLS.PeerCertificates) > 0 {
			s.peers = append(s.peers, r.TLS.PeerCertificates[0])
		}
		s.mu.Unlock()
		if op == "simplereenroll" && len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "simplereenroll needs the current certificate", http.StatusUnauthorized)
			return
		}
		der, err := base64.StdEncoding.DecodeString(string(body))
		if err != nil {
			http.Error(w, "body is not base64", http.StatusBadRequest)
			return
		}
		csr, err := x509.ParseCertificateRequest(der)
		if err != nil || csr.CheckSignature() != nil {
			http.Error(w, "bad CSR", http.StatusBadRequest)
			return
		}
		leaf := signCert(s.t, &x509.Certificate{
			RawSubject: csr.RawSubject, URIs: csr.URIs,
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}, s.ca.Inter, csr.PublicKey, s.ca.interKey)
		writeBase64(w, "application/pkcs7-mime; smime-type=certs-only", certsOnly(s.t, leaf, s.ca.Inter))
	case op == "serverkeygen" || op == "fullcmc":
		http.Error(w, op+" is not implemented", http.StatusNotImplemented)
	default:
		http.Error(w, "not found", http.StatusNotFound)
	}
}

// startServerTLS serves h over TLS with tc.
func startServerTLS(t *testing.T, tc *tls.Config, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = tc
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func deviceCSR(t testing.TB, key crypto.Signer, serial string) []byte {
	t.Helper()
	der, err := pki.NewDeviceCSR(key, serial, []string{"02:00:00:00:00:01"})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestESTFetchCACertsPinned(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "EST")
	ctx := context.Background()

	for _, label := range []string{"", "acme"} {
		s := newESTServer(t, ca, label)
		root, inter, err := FetchESTCACertsPinned(ctx, s.URL, label, colonUpper(pki.Fingerprint(ca.Root)))
		if err != nil {
			t.Fatalf("label %q: %v", label, err)
		}
		if !root.Equal(ca.Root) || len(inter) != 1 || !inter[0].Equal(ca.Inter) {
			t.Fatalf("label %q: root %s, intermediates %d; want the pinned root and its intermediate", label, root.Subject, len(inter))
		}
	}

	s := newESTServer(t, ca, "")
	other := newTestCA(t, "Other")
	_, _, err := FetchESTCACertsPinned(ctx, s.URL, "", pki.Fingerprint(other.Root))
	if !errors.Is(err, ErrPinMismatch) || !strings.Contains(err.Error(), "none of its 2 certificate(s)") ||
		!strings.Contains(err.Error(), pki.Fingerprint(ca.Root)) {
		t.Errorf("wrong pin: err = %v, want ErrPinMismatch listing the bundle", err)
	}

	// The server's leaf is in the bundle but is no CA.
	leafTLS := ca.serverCert(t)
	s.setReply(func(w http.ResponseWriter, r *http.Request) bool {
		writeBase64(w, "application/pkcs7-mime", certsOnly(t, leafTLS.Leaf, ca.Inter, ca.Root))
		return true
	})
	if _, _, err := FetchESTCACertsPinned(ctx, s.URL, "", pki.Fingerprint(leafTLS.Leaf)); !errors.Is(err, ErrPinMismatch) ||
		!strings.Contains(err.Error(), "not a CA certificate") {
		t.Errorf("pinned non-CA: err = %v", err)
	}

	// A man in the middle relays the real bundle over its own TLS.
	mitm := startServer(t, other.serverCert(t), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeBase64(w, "application/pkcs7-mime", certsOnly(t, ca.Inter, ca.Root))
	}))
	if _, _, err := FetchESTCACertsPinned(ctx, mitm.URL, "", pki.Fingerprint(ca.Root)); !errors.Is(err, ErrPinMismatch) ||
		!strings.Contains(err.Error(), "does not chain to the pinned root") {
		t.Errorf("relayed bundle: err = %v, want a server chain ErrPinMismatch", err)
	}

	for _, bad := range []string{"a/b", "..", "tenant one", "t%41"} {
		if _, _, err := FetchESTCACertsPinned(ctx, s.URL, bad, pki.Fingerprint(ca.Root)); err == nil || !strings.Contains(err.Error(), "EST label") {
			t.Errorf("label %q: err = %v, want a label error", bad, err)
		}
	}
}

// TestESTBadAnswers: every malformed answer is a clear, permanent error.
func TestESTBadAnswers(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "EST")
	s := newESTServer(t, ca, "")
	pool := x509.NewCertPool()
	pool.AddCert(ca.Root)
	e, err := NewEST(s.URL, "", WithRoots(pool))
	if err != nil {
		t.Fatal(err)
	}
	answer := func(ct string, body []byte) func(w http.ResponseWriter, r *http.Request) bool {
		return func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("Content-Type", ct)
			w.Write(body)
			return true
		}
	}
	b64 := func(der []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(der)) }
	enveloped, err := pkcs7.EncryptUsingPSK([]byte("secret"), bytes.Repeat([]byte{7}, 8)) // DES, the library default
	if err != nil {
		t.Fatal(err)
	}
	emptySigned := certsOnly(t)
	tests := []struct {
		name  string
		reply func(w http.ResponseWriter, r *http.Request) bool
		want  string
	}{
		{"not base64", answer("application/pkcs7-mime", []byte("<html>hello</html>")), "not base64"},
		{"empty body", answer("application/pkcs7-mime", nil), "not base64"},
		{"wrong content type", answer("text/html", b64(certsOnly(t, ca.Inter, ca.Root))), `Content-Type "text/html"`},
		{"PEM instead of PKCS#7", answer("application/pkcs7-mime", pemCerts(ca.Root)), "not base64"},
		{"not PKCS#7", answer("application/pkcs7-mime", b64([]byte{0x30, 0x03, 0x02, 0x01, 0x01})), "not a PKCS#7"},
		{"PKCS#7 without certificates", answer("application/pkcs7-mime", b64(emptySigned)), "holds no certificate"},
		{"encrypted data", answer("application/pkcs7-mime", b64(enveloped)), "holds no certificate"},
		{"smime-type not certs-only", answer("application/pkcs7-mime; smime-type=enveloped-data", b64(enveloped)), "want certs-only"},
		{"oversized", answer("application/pkcs7-mime", bytes.Repeat([]byte("A"), maxESTBody+10)), "larger than"},
		{"200 with 204", func(w http.ResponseWriter, r *http.Request) bool { w.WriteHeader(http.StatusNoContent); return true }, "want 200 OK"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.setReply(tt.reply)
			_, err := e.CACerts(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("CACerts err = %v, want it to say %q", err, tt.want)
			}
			if IsTransient(err) {
				t.Errorf("a malformed answer is transient: %v", err)
			}
			if _, _, err := FetchESTCACertsPinned(context.Background(), s.URL, "", pki.Fingerprint(ca.Root)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("FetchESTCACertsPinned err = %v, want it to say %q", err, tt.want)
			}
		})
	}

	// An enrollment answer without the CSR's key.
	s.setReply(answer("application/pkcs7-mime; smime-type=certs-only", b64(certsOnly(t, ca.Inter))))
	if _, err := e.SimpleEnroll(context.Background(), deviceCSR(t, newKey(t), "SN1"), ESTAuth{Username: "SN1", Password: "tok"}); err == nil ||
		!strings.Contains(err.Error(), "none for the CSR's key") {
		t.Errorf("answer without our certificate: err = %v", err)
	}
}

// TestESTErrors: HTTP errors map as the native client's do; EST text bodies are shown.
func TestESTErrors(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "EST")
	s := newESTServer(t, ca, "")
	pool := x509.NewCertPool()
	pool.AddCert(ca.Root)
	e, err := NewEST(s.URL, "", WithRoots(pool))
	if err != nil {
		t.Fatal(err)
	}
	text := func(status int, body string, hdr ...string) func(w http.ResponseWriter, r *http.Request) bool {
		return func(w http.ResponseWriter, r *http.Request) bool {
			for i := 0; i+1 < len(hdr); i += 2 {
				w.Header().Set(hdr[i], hdr[i+1])
			}
			http.Error(w, body, status)
			return true
		}
	}
	tests := []struct {
		name       string
		reply      func(w http.ResponseWriter, r *http.Request) bool
		status     int
		inMessage  string
		transient  bool
		retryAfter time.Duration
	}{
		{"401 Basic", text(401, "bootstrap token invalid", "WWW-Authenticate", `Basic realm="est"`), 401, "401 Unauthorized: bootstrap token invalid", false, 0},
		{"400 bad CSR", text(400, "CSR has no serialNumber"), 400, "CSR has no serialNumber", false, 0},
		{"403", text(403, "serial held for review"), 403, "serial held for review", false, 0},
		{"501", text(501, "serverkeygen is not implemented"), 501, "not implemented", false, 0},
		{"503 Retry-After", text(503, "store unavailable", "Retry-After", "9"), 503, "store unavailable", true, 9 * time.Second},
		{"429", text(429, "slow down", "Retry-After", "3"), 429, "slow down", true, 3 * time.Second},
		{"202 pending", func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("Retry-After", "60")
			w.WriteHeader(http.StatusAccepted)
			return true
		}, 202, "holds the request for approval; retry after 60", true, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.setReply(tt.reply)
			_, err := e.SimpleEnroll(context.Background(), deviceCSR(t, newKey(t), "SN1"), ESTAuth{Username: "SN1", Password: "tok"})
			var re *ResponseError
			if !errors.As(err, &re) || re.StatusCode != tt.status {
				t.Fatalf("err = %v, want a ResponseError %d", err, tt.status)
			}
			if !strings.Contains(err.Error(), tt.inMessage) {
				t.Errorf("message %q does not say %q", err, tt.inMessage)
			}
			if IsTransient(err) != tt.transient {
				t.Errorf("IsTransient = %v, want %v", !tt.transient, tt.transient)
			}
			if d, _ := RetryAfter(err); d != tt.retryAfter {
				t.Errorf("RetryAfter = %v, want %v", d, tt.retryAfter)
			}
		})
	}
}

func TestESTEnrollReenroll(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "EST")
	s := newESTServer(t, ca, "acme")
	ctx := context.Background()
	root, _, err := FetchESTCACertsPinned(ctx, s.URL, "acme", pki.Fingerprint(ca.Root))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	e, err := NewEST(s.URL, "acme", WithRoots(pool))
	if err != nil {
		t.Fatal(err)
	}

	key := newKey(t)
	got, err := e.SimpleEnroll(ctx, deviceCSR(t, key, "SN-1"), ESTAuth{Username: "SN-1", Password: "tok-1"})
	if err != nil {
		t.Fatal(err)
	}
	if !key.PublicKey.Equal(got.Certificate.PublicKey) || got.Certificate.Subject.SerialNumber != "SN-1" {
		t.Fatalf("certificate %s is not for our key and serial", got.Certificate.Subject)
	}
	if len(got.Extra) != 1 || !got.Extra[0].Equal(ca.Inter) {
		t.Errorf("extra certificates: %d, want the intermediate", len(got.Extra))
	}
	if _, err := e.SimpleEnroll(ctx, deviceCSR(t, newKey(t), "SN-2"), ESTAuth{Bearer: "tok-2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.SimpleEnroll(ctx, deviceCSR(t, newKey(t), "SN-3"), ESTAuth{Bearer: "x", Password: "y"}); err == nil {
		t.Error("Basic and Bearer together: no error")
	}
	if _, err := e.SimpleEnroll(ctx, deviceCSR(t, newKey(t), "SN-3"), ESTAuth{Username: "a:b", Password: "y"}); err == nil {
		t.Error("user name with ':': no error")
	}
	s.mu.Lock()
	wantAuth := []string{"Basic " + base64.StdEncoding.EncodeToString([]byte("SN-1:tok-1")), "Bearer tok-2"}
	if strings.Join(s.auth, "|") != strings.Join(wantAuth, "|") {
		t.Errorf("Authorization headers %q, want %q", s.auth, wantAuth)
	}
	for _, rt := range s.reqTypes {
		if rt != "application/pkcs10, base64" {
			t.Errorf("request Content-Type, Content-Transfer-Encoding = %q", rt)
		}
	}
	if !bytes.Contains(s.bodies[0], []byte("\r\n")) {
		t.Errorf("request body is not in base64 lines: %q", s.bodies[0])
	}
	s.mu.Unlock()

	// Without a client certificate, simplereenroll is refused.
	if _, err := e.SimpleReenroll(ctx, deviceCSR(t, key, "SN-1")); err == nil || !strings.Contains(err.Error(), "needs the current certificate") {
		t.Errorf("reenroll without a certificate: %v", err)
	}
	// With it (its key an opaque crypto.Signer, as a TPM key is), it renews.
	tc := tls.Certificate{Certificate: [][]byte{got.Certificate.Raw, ca.Inter.Raw}, PrivateKey: opaqueSigner{key}, Leaf: got.Certificate}
	re, err := NewEST(s.URL, "acme", WithRoots(pool), WithClientCertificate(tc))
	if err != nil {
		t.Fatal(err)
	}
	newKey2 := newKey(t)
	renewed, err := re.SimpleReenroll(ctx, deviceCSR(t, newKey2, "SN-1"))
	if err != nil {
		t.Fatal(err)
	}
	if !newKey2.PublicKey.Equal(renewed.Certificate.PublicKey) {
		t.Error("re-keyed certificate is not for the new key")
	}
	s.mu.Lock()
	if len(s.peers) != 1 || !s.peers[0].Equal(got.Certificate) {
		t.Errorf("server saw client certificates %d, want the enrolled one", len(s.peers))
	}
	s.mu.Unlock()
}

// opaqueSigner hides the concrete key type, as a TPM signer does.
type opaqueSigner struct{ crypto.Signer }

func TestESTCSRAttrs(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "EST")
	s := newESTServer(t, ca, "")
	pool := x509.NewCertPool()
	pool.AddCert(ca.Root)
	e, err := NewEST(s.URL, "", WithRoots(pool))
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := e.CSRAttrs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(attrs) != 2 || !attrs[0].OID.Equal(asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}) || attrs[0].Values != nil ||
		!attrs[1].OID.Equal(asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}) || len(attrs[1].Values) != 1 {
		t.Fatalf("attrs = %+v", attrs)
	}
	var curve asn1.ObjectIdentifier
	if _, err := asn1.Unmarshal(attrs[1].Values[0], &curve); err != nil || !curve.Equal(asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}) {
		t.Errorf("curve value = %v (%v)", curve, err)
	}
	s.setReply(func(w http.ResponseWriter, r *http.Request) bool { w.WriteHeader(http.StatusNoContent); return true })
	if attrs, err := e.CSRAttrs(context.Background()); err != nil || attrs != nil {
		t.Errorf("204: attrs %v, err %v; want none", attrs, err)
	}
	s.setReply(func(w http.ResponseWriter, r *http.Request) bool {
		writeBase64(w, "application/csrattrs", []byte{0x31, 0x00})
		return true
	})
	if _, err := e.CSRAttrs(context.Background()); err == nil || !strings.Contains(err.Error(), "not a DER SEQUENCE") {
		t.Errorf("a SET: err = %v", err)
	}
}

func TestDecodeBase64Body(t *testing.T) {
	der := make([]byte, 200)
	rand.Read(der)
	std := base64.StdEncoding.EncodeToString(der)
	for name, in := range map[string]string{
		"one line":   std,
		"CRLF lines": string(encodeBase64Lines(der)),
		"LF 64":      std[:64] + "\n" + std[64:128] + "\n" + std[128:] + "\n",
		"no padding": base64.RawStdEncoding.EncodeToString(der[:199]),
	} {
		got, err := decodeBase64Body([]byte(in))
		want := der
		if name == "no padding" {
			want = der[:199]
		}
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, bad := range []string{"", "  \r\n", "****", "QUJD!"} {
		if _, err := decodeBase64Body([]byte(bad)); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
}
