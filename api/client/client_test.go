package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"devpki/api/wire"
	"devpki/pkg/pki"
)

func pemCerts(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

// startServer serves h over TLS with cert.
func startServer(t *testing.T, cert tls.Certificate, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func rootsHandler(bundle []byte, hits *atomic.Int32) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits != nil {
			hits.Add(1)
		}
		if r.URL.Path != "/v1/ca/roots" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/pem-certificate-chain")
		w.Write(bundle)
	})
}

func colonUpper(fp string) string {
	var parts []string
	for i := 0; i < len(fp); i += 2 {
		parts = append(parts, strings.ToUpper(fp[i:i+2]))
	}
	return strings.Join(parts, ":")
}

func TestFetchRootsPinned(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "Real")
	other := newTestCA(t, "Other")
	mitm := newTestCA(t, "MITM")
	bundle := pemCerts(other.Root, ca.Root)

	// A certificate chained to the real CA but without serverAuth (a device's).
	k := newKey(t)
	devLeaf := signCert(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "device"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	}, ca.Inter, k.Public(), ca.interKey)
	devCert := tls.Certificate{Certificate: [][]byte{devLeaf.Raw, ca.Inter.Raw}, PrivateKey: k}

	tests := []struct {
		name    string
		cert    tls.Certificate
		pin     string
		wantErr error // nil: success
	}{
		{"right fingerprint", ca.serverCert(t), pki.Fingerprint(ca.Root), nil},
		{"right fingerprint with colons, upper case", ca.serverCert(t), colonUpper(pki.Fingerprint(ca.Root)), nil},
		{"wrong fingerprint", ca.serverCert(t), pki.Fingerprint(mitm.Root), ErrPinMismatch},
		{"server chain not from pinned root", mitm.serverCert(t), pki.Fingerprint(ca.Root), ErrPinMismatch},
		{"server chain from another root in the bundle", other.serverCert(t), pki.Fingerprint(ca.Root), ErrPinMismatch},
		{"server cert without serverAuth", devCert, pki.Fingerprint(ca.Root), ErrPinMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, tt.cert, rootsHandler(bundle, nil))
			got, err := FetchRootsPinned(context.Background(), srv.URL, tt.pin)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if IsTransient(err) {
					t.Errorf("pin failure classified transient")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || !got[0].Equal(ca.Root) {
				t.Fatalf("got %d roots, want only the pinned root", len(got))
			}
		})
	}

	t.Run("malformed fingerprint", func(t *testing.T) {
		for _, fp := range []string{"", "abcd", strings.Repeat("zz", 32)} {
			if _, err := FetchRootsPinned(context.Background(), "https://127.0.0.1:1", fp); err == nil {
				t.Errorf("fingerprint %q accepted", fp)
			}
		}
	})
	t.Run("plain http refused", func(t *testing.T) {
		if _, err := FetchRootsPinned(context.Background(), "http://127.0.0.1:1", pki.Fingerprint(ca.Root)); err == nil {
			t.Error("http:// accepted")
		}
	})
}

func TestEnroll(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "CA")
	pool := x509.NewCertPool()
	pool.AddCert(ca.Root)
	want := wire.EnrollResponse{DeviceID: "dev-1", Certificate: "-----BEGIN CERTIFICATE-----\n...", Chain: []string{"x"},
		RenewAfter: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}

	srv := startServer(t, ca.serverCert(t), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/prefix/v1/enroll" {
			http.Error(w, "bad route "+r.Method+" "+r.URL.Path, http.StatusNotFound)
			return
		}
		if got := r.Header.Get("Authorization"); got != "Bearer tok-1" {
			http.Error(w, "bad auth "+got, http.StatusBadRequest)
			return
		}
		if r.Header.Get("User-Agent") != "test-agent" || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad headers", http.StatusBadRequest)
			return
		}
		var req wire.EnrollRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.CSR != "csr-pem" {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(want)
	}))
	c, err := New(srv.URL+"/prefix", WithRoots(pool), WithUserAgent("test-agent"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Enroll(context.Background(), "tok-1", &wire.EnrollRequest{CSR: "csr-pem"})
	if err != nil {
		t.Fatal(err)
	}
	if got.DeviceID != want.DeviceID || got.Certificate != want.Certificate || !got.RenewAfter.Equal(want.RenewAfter) {
		t.Errorf("got %+v, want %+v", got, want)
	}

	t.Run("untrusted server", func(t *testing.T) {
		c, _ := New(srv.URL + "/prefix") // system roots do not hold the test CA
		_, err := c.Enroll(context.Background(), "tok-1", &wire.EnrollRequest{CSR: "csr-pem"})
		if err == nil || IsTransient(err) {
			t.Fatalf("err = %v, want a permanent TLS error", err)
		}
	})
}

func TestErrorReplies(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "CA")
	pool := x509.NewCertPool()
	pool.AddCert(ca.Root)
	var reply func(w http.ResponseWriter)
	srv := startServer(t, ca.serverCert(t), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reply(w) }))
	c, err := New(srv.URL, WithRoots(pool))
	if err != nil {
		t.Fatal(err)
	}

	problem := func(status int, slug, detail string, hdr ...string) func(w http.ResponseWriter) {
		return func(w http.ResponseWriter) {
			for i := 0; i+1 < len(hdr); i += 2 {
				w.Header().Set(hdr[i], hdr[i+1])
			}
			w.Header().Set("Content-Type", "application/problem+json; charset=utf-8")
			w.WriteHeader(status)
			json.NewEncoder(w).Encode(wire.Problem{Type: wire.ProblemTypePrefix + slug, Title: http.StatusText(status), Status: status, Detail: detail})
		}
	}
	tests := []struct {
		name          string
		reply         func(w http.ResponseWriter)
		status        int
		slug          string // "" when not a problem
		inMessage     string
		transient     bool
		retryAfter    time.Duration
		hasRetryAfter bool
	}{
		{name: "401 problem", reply: problem(401, "token-invalid", "token expired"), status: 401,
			slug: "token-invalid", inMessage: "token expired"},
		{name: "409 problem", reply: problem(409, "serial-conflict", "held for review"), status: 409,
			slug: "serial-conflict", inMessage: "held for review"},
		{name: "429 problem with Retry-After", reply: problem(429, "rate-limited", "slow down", "Retry-After", "7"), status: 429,
			slug: "rate-limited", transient: true, retryAfter: 7 * time.Second, hasRetryAfter: true},
		{name: "503 text with Retry-After date", reply: func(w http.ResponseWriter) {
			w.Header().Set("Date", "Mon, 23 Nov 2026 10:00:00 GMT")
			w.Header().Set("Retry-After", "Mon, 23 Nov 2026 10:00:42 GMT")
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
		}, status: 503, inMessage: "overloaded", transient: true, retryAfter: 42 * time.Second, hasRetryAfter: true},
		{name: "502 no Retry-After", reply: func(w http.ResponseWriter) { w.WriteHeader(502) }, status: 502, transient: true},
		{name: "504", reply: func(w http.ResponseWriter) { w.WriteHeader(504) }, status: 504, transient: true},
		{name: "500 text excerpt", reply: func(w http.ResponseWriter) {
			http.Error(w, "boom "+strings.Repeat("x", 5000), http.StatusInternalServerError)
		}, status: 500, inMessage: "500 Internal Server Error: boom xxx", transient: true},
		{name: "bad Retry-After ignored", reply: func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "soon")
			w.WriteHeader(503)
		}, status: 503, transient: true},
		{name: "malformed problem falls back to excerpt", reply: func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(400)
			io.WriteString(w, "{not json")
		}, status: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reply = tt.reply
			_, err := c.Enroll(context.Background(), "tok", &wire.EnrollRequest{CSR: "x"})
			var re *ResponseError
			if !errors.As(err, &re) || re.StatusCode != tt.status {
				t.Fatalf("err = %v, want a ResponseError with status %d", err, tt.status)
			}
			var p *wire.Problem
			if gotProblem := errors.As(err, &p); gotProblem != (tt.slug != "") {
				t.Fatalf("errors.As(*wire.Problem) = %v, want %v", gotProblem, tt.slug != "")
			}
			if tt.slug != "" && (p.Slug() != tt.slug || p.Status != tt.status) {
				t.Errorf("problem = %+v, want slug %s", p, tt.slug)
			}
			if !strings.Contains(err.Error(), tt.inMessage) {
				t.Errorf("message %q does not contain %q", err, tt.inMessage)
			}
			if len(re.Body) > excerptBytes+len("…") {
				t.Errorf("body excerpt is %d bytes", len(re.Body))
			}
			if got := IsTransient(err); got != tt.transient {
				t.Errorf("IsTransient = %v, want %v", got, tt.transient)
			}
			d, ok := RetryAfter(err)
			if ok != tt.hasRetryAfter || d != tt.retryAfter {
				t.Errorf("RetryAfter = %v, %v; want %v, %v", d, ok, tt.retryAfter, tt.hasRetryAfter)
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestIsTransientNetwork(t *testing.T) {
	t.Parallel()
	// A port with nothing listening: connection refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, err := New("https://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	_, refused := c.Roots(context.Background())

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, cancelled := c.Roots(ctx)

	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"connection refused", refused, true},
		{"connection reset", fmt.Errorf("read: %w", &net.OpError{Op: "read", Err: syscall.ECONNRESET}), true},
		{"net timeout", fmt.Errorf("dial: %w", timeoutErr{}), true},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), true},
		{"unexpected EOF", fmt.Errorf("x: %w", io.ErrUnexpectedEOF), true},
		{"server closed a new connection", &url.Error{Op: "Get", URL: "https://ca/v1/ca/roots", Err: errors.New("http: server closed idle connection")}, true},
		{"dns temporary", &net.DNSError{Err: "server misbehaving", IsTemporary: true}, true},
		{"dns not found (resolver not up yet at boot)", &net.DNSError{Err: "no such host", IsNotFound: true}, true},
		{"cancelled", cancelled, false},
		{"certificate error", x509.UnknownAuthorityError{}, false},
		{"other", errors.New("boom"), false},
		{"400", &ResponseError{StatusCode: 400}, false},
		{"500", &ResponseError{StatusCode: 500}, true},
		{"501", &ResponseError{StatusCode: 501}, false},
		{"429", &ResponseError{StatusCode: 429}, true},
	}
	for _, tt := range tests {
		if got := IsTransient(tt.err); got != tt.want {
			t.Errorf("%s: IsTransient(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

func TestCreateTokenMTLS(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "CA")
	pool := x509.NewCertPool()
	pool.AddCert(ca.Root)
	k := newKey(t)
	adminLeaf := signCert(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "admin"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	}, ca.Inter, k.Public(), ca.interKey)
	admin := tls.Certificate{Certificate: [][]byte{adminLeaf.Raw, ca.Inter.Raw}, PrivateKey: k}

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req wire.TokenCreateRequest
		if r.URL.Path != "/v1/admin/tokens" || json.NewDecoder(r.Body).Decode(&req) != nil || req.Serial != "SN1" {
			w.WriteHeader(400)
			return
		}
		if len(r.TLS.PeerCertificates) == 0 || r.TLS.PeerCertificates[0].Subject.CommonName != "admin" {
			w.WriteHeader(403)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(201)
		json.NewEncoder(w).Encode(wire.TokenCreateResponse{ID: "t1", Token: "secret", Serial: req.Serial, Uses: 1})
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.serverCert(t)}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.StartTLS()
	defer srv.Close()

	c, err := New(srv.URL, WithRoots(pool), WithClientCertificate(admin))
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.CreateToken(context.Background(), &wire.TokenCreateRequest{Serial: "SN1"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Token != "secret" || got.Serial != "SN1" {
		t.Errorf("got %+v", got)
	}

	noCert, _ := New(srv.URL, WithRoots(pool))
	if _, err := noCert.CreateToken(context.Background(), &wire.TokenCreateRequest{Serial: "SN1"}); err == nil {
		t.Error("CreateToken without a client certificate succeeded")
	}
}

func TestRootsChainAndConnections(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "CA")
	pool := x509.NewCertPool()
	pool.AddCert(ca.Root)
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/ca/roots":
			w.Write(pemCerts(ca.Root))
		case "/v1/ca/chain":
			w.Write(pemCerts(ca.Inter, ca.Root))
		default:
			http.NotFound(w, r)
		}
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.serverCert(t)}}
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()

	for _, tt := range []struct {
		opts      []Option
		wantConns int32
	}{
		{[]Option{WithRoots(pool)}, 1},
		{[]Option{WithRoots(pool), WithNewConnectionPerRequest()}, 3},
	} {
		conns.Store(0)
		c, err := New(srv.URL, tt.opts...)
		if err != nil {
			t.Fatal(err)
		}
		roots, err := c.Roots(context.Background())
		if err != nil || len(roots) != 1 || !roots[0].Equal(ca.Root) {
			t.Fatalf("Roots = %v, %v", roots, err)
		}
		chain, err := c.Chain(context.Background())
		if err != nil || len(chain) != 2 || !chain[0].Equal(ca.Inter) {
			t.Fatalf("Chain = %v, %v", chain, err)
		}
		if _, err := c.Roots(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := conns.Load(); got != tt.wantConns {
			t.Errorf("%d connections for 3 requests, want %d", got, tt.wantConns)
		}
	}
}

func TestNewOptions(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		url  string
		opts []Option
	}{
		{"ftp://x", nil},
		{"https://", nil},
		{"https://x?q=1", nil},
		{"https://x", []Option{WithHTTPClient(http.DefaultClient), WithRoots(x509.NewCertPool())}},
		{"https://x", []Option{WithTransport(http.DefaultTransport), WithNewConnectionPerRequest()}},
	} {
		if _, err := New(tt.url, tt.opts...); err == nil {
			t.Errorf("New(%q, %d options) succeeded", tt.url, len(tt.opts))
		}
	}
}
