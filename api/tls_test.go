package api_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"devpki/api"
)

// TestTLSHardening: TLS 1.2 only with ECDHE and AEAD; older versions and
// CBC suites are refused in the handshake. Every HTTPS answer, errors
// included, carries HSTS and nosniff.
func TestTLSHardening(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	addr := f.srv.Listener.Addr().String()
	dial := func(cfg *tls.Config) error {
		cfg.RootCAs = f.ca.Roots()
		cfg.ServerName = "localhost"
		c, err := tls.Dial("tcp", addr, cfg)
		if err == nil {
			c.Close()
		}
		return err
	}
	refused := map[string]*tls.Config{
		"TLS 1.1": {MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11},
		"TLS 1.2 ECDHE-ECDSA-AES128-SHA (CBC)": {MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}},
		"TLS 1.2 ECDHE-ECDSA-AES128-SHA256 (CBC)": {MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}},
	}
	for name, cfg := range refused {
		if err := dial(cfg); err == nil {
			t.Errorf("%s: handshake accepted", name)
		}
	}
	accepted := map[string]*tls.Config{
		"TLS 1.3":                        {MinVersion: tls.VersionTLS13},
		"TLS 1.2 ECDHE-ECDSA-AES128-GCM": {MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}},
		"TLS 1.2 ECDHE-ECDSA-CHACHA20":   {MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}},
	}
	for name, cfg := range accepted {
		if err := dial(cfg); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	for _, path := range []string{"/healthz", "/v1/admin/devices", "/no/such/route"} {
		resp, err := f.client.Get(f.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if h := resp.Header.Get("Strict-Transport-Security"); h != "max-age=31536000" {
			t.Errorf("GET %s (%d): Strict-Transport-Security %q", path, resp.StatusCode, h)
		}
		if h := resp.Header.Get("X-Content-Type-Options"); h != "nosniff" {
			t.Errorf("GET %s (%d): X-Content-Type-Options %q", path, resp.StatusCode, h)
		}
	}
}

// TestSlowClientsAreCut: a client that trickles its headers or its body is
// disconnected when the server's read timeouts pass, instead of holding
// the connection. (Short timeouts here; ca serve uses DefaultTimeouts.)
func TestSlowClientsAreCut(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := api.NewHTTPServer(f.srv.Config.Handler, f.srv.TLS.Clone(),
		api.Timeouts{ReadHeader: 300 * time.Millisecond, Read: 600 * time.Millisecond},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })

	for name, send := range map[string]string{
		"slow headers": "POST /v1/enroll HTTP/1.1\r\nHost: localhost\r\n",
		"slow body": "POST /v1/enroll HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer x\r\n" +
			"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"csr\":",
	} {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: f.ca.Roots(), ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte(send)); err != nil {
			t.Fatal(err)
		}
		// Our own deadline is far beyond the server's: hitting it means
		// the server held the connection.
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = io.Copy(io.Discard, c)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: the server still held the connection after 10s", name)
		}
		c.Close()
	}

	// A prompt client on the same server is served.
	resp, err := f.client.Post("https://"+ln.Addr().String()+"/v1/enroll", "application/json", bytes.NewReader([]byte(`{}`)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("prompt client: %d, want 401", resp.StatusCode)
	}
}
