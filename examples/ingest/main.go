// Command ingest is a sample devpki component: an HTTPS service that
// accepts only mutual-TLS clients with an unrevoked certificate from the CA,
// built with pkg/pki/mtls. POST /v1/ingest answers with the caller's
// identity as JSON.
//
//	ingest --listen 127.0.0.1:9443 --root root.crt --cert server.crt --key server.key \
//	    --key-password-file pw --crl-url https://127.0.0.1:8443/crl [--crl-refresh 2s]
//
// It prints "listening on https://ADDR" on stderr once it accepts
// connections (useful with --listen 127.0.0.1:0), and renewed certificate
// files are picked up without a restart.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"devpki/pkg/pki/mtls"
)

const maxBody = 1 << 20

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "ingest:", err)
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// run parses args, serves until ctx ends, and calls ready (if not nil)
// with the listening address.
func run(ctx context.Context, args []string, stderr io.Writer, ready func(addr string)) error {
	fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:9443", "listen address")
	var o mtls.Options
	fs.StringVar(&o.RootFile, "root", "", "PEM file of the CA root(s) to trust (required)")
	fs.StringVar(&o.CertFile, "cert", "", "server certificate PEM, with its chain (required)")
	fs.StringVar(&o.KeyFile, "key", "", "server key PEM (required)")
	fs.StringVar(&o.KeyPasswordFile, "key-password-file", "", "file holding the key's password, if encrypted")
	fs.StringVar(&o.CRLURL, "crl-url", "", "URL of the CA's DER CRL, e.g. https://ca:8443/crl")
	fs.StringVar(&o.CRLFile, "crl-file", "", "local CRL file (DER or PEM)")
	fs.DurationVar(&o.CRLRefresh, "crl-refresh", mtls.DefaultCRLRefresh, "CRL refresh interval")
	fs.BoolVar(&o.CRLPartitions, "crl-partitions", false, "check each client against the partition CRL its certificate names under --crl-url (<crl-url>/p/<n>)")
	fs.DurationVar(&o.MaxCRLStaleness, "max-crl-staleness", 0, "refuse clients when no CRL fetch succeeded for this long (0: until the CRL's nextUpdate)")
	fs.BoolVar(&o.FailOpen, "fail-open", false, "accept clients while no fresh CRL is held (default: refuse them)")
	fs.StringVar(&o.TrustDomain, "trust-domain", "devpki.local", "SPIFFE trust domain of the CA")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.RootFile == "" || o.CertFile == "" || o.KeyFile == "" || fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("%w: --root, --cert and --key are required", flag.ErrHelp)
	}
	if o.CRLURL == "" && o.CRLFile == "" {
		fmt.Fprintln(stderr, "ingest: warning: no --crl-url or --crl-file: revoked clients are accepted")
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	o.Logger = log

	src, err := mtls.New(o)
	if err != nil {
		return err
	}
	defer src.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/ingest", func(w http.ResponseWriter, r *http.Request) {
		id, err := src.RequestIdentity(r)
		if err != nil {
			http.Error(w, "forbidden: "+err.Error(), http.StatusForbidden)
			return
		}
		if _, err := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, maxBody)); err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		log.Info("ingest", "role", id.Role, "tenant", id.Tenant, "device_id", id.DeviceID, "cert_serial", id.CertSerial)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(id)
	})
	srv := &http.Server{
		Handler:           mux,
		TLSConfig:         src.ServerConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// Refused handshakes (revoked, unknown CA, stale CRL) are logged.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	fmt.Fprintf(stderr, "listening on https://%s\n", addr)
	if ready != nil {
		ready(addr)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
