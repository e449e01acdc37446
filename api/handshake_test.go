package api_test

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"

	"devpki/api"
)

// TestHandshakeListener: with one handshake at a time, many concurrent
// clients on new connections are all served; HTTP/2 is offered as
// ServeTLS offers it; a client that is not TLS is dropped without holding
// anything up; closing the listener ends Serve.
func TestHandshakeListener(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cert := f.srv.TLS.Certificates[0]
	roots := f.ca.Roots()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{TLSConfig: api.TLSConfig(cert, false), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto)
	})}
	served := make(chan error, 1)
	go func() { served <- api.ServeTLS(srv, ln, 1) }()

	// A plain-TCP client that sends garbage: refused, nothing blocks.
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		_, _ = c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		defer c.Close()
	}
	url := "https://" + ln.Addr().String() + "/"
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
				TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}}}
			resp, err := hc.Get(url)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if string(b) != "HTTP/1.1" {
				errs <- errors.New("proto " + string(b))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	h2 := &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: true,
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}}}
	resp, err := h2.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Errorf("protocol %s, want HTTP/2 as ServeTLS offers", resp.Proto)
	}
	srv.Close()
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve returned %v", err)
	}
}
