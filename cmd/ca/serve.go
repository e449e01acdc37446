package main

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"

	"go.step.sm/crypto/pemutil"

	"devpki/api"
	"devpki/pkg/metrics"
	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/registry/sqlstore"
	"devpki/pkg/tpm/verify"
)

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var configPath, listen, httpListen, devDir string
	var dev bool
	fs := newFlags("serve", stderr)
	fs.StringVar(&configPath, "config", "", "path of ca.yaml (from 'ca init')")
	fs.StringVar(&listen, "listen", "", "listen address, overriding the config's")
	fs.StringVar(&httpListen, "http-listen", "", "plain-HTTP address serving only the CRL, OCSP and CA certificates (the config's http_listen);\n"+
		"issued certificates then name it unless http_url says otherwise (--dev: 127.0.0.1:8080, or a free port)")
	fs.BoolVar(&dev, "dev", false, "development mode: create the CA in --dir on first start, then serve it and print an enroll command")
	fs.StringVar(&devDir, "dir", "devpki-data", "data directory for --dev")
	var logFormat string
	fs.StringVar(&logFormat, "log-format", "", "log format on stderr, access log included: text or json (default: the config's log_format, else text)")
	var metricsListen string
	fs.StringVar(&metricsListen, "metrics-listen", "", "plain-HTTP address serving only GET /metrics, unauthenticated (the config's metrics_listen); bind it to loopback")
	var cpuProfile string
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a Go CPU profile of the whole run to this file (for performance work)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case dev && configPath != "":
		return fmt.Errorf("%w: use either --dev or --config", errUsage)
	case dev:
		configPath = filepath.Join(devDir, fileConfig)
		if _, err := os.Stat(configPath); errors.Is(err, os.ErrNotExist) {
			o := initOptions{Dir: devDir, Dev: true, DNS: []string{"localhost"}, IPs: []string{"127.0.0.1"},
				Listen: "127.0.0.1:8443", TrustDomain: "devpki.local", AdminName: "admin"}
			if listen != "" {
				o.Listen = listen
			}
			fmt.Fprintf(stderr, "first start: creating a development CA in %s\n", devDir)
			if _, err := initCA(ctx, o, stderr); err != nil {
				return err
			}
		}
	case configPath == "":
		return fmt.Errorf("%w: --config DIR/ca.yaml is required (or --dev)", errUsage)
	}
	cfg, err := LoadConfig(configPath)
	if err != nil {
		return err
	}
	if listen != "" {
		cfg.Listen = listen
	}
	if logFormat != "" {
		cfg.LogFormat = logFormat
	}
	if httpListen != "" {
		cfg.HTTPListen = httpListen
	}
	if metricsListen != "" {
		cfg.MetricsListen = metricsListen
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	return serve(ctx, cfg, dev, stdout, stderr)
}

func serve(ctx context.Context, cfg *Config, dev bool, stdout, stderr io.Writer) error {
	if os.Getenv("GOGC") == "" {
		// The heap is small (tens of MB) and short-lived garbage dominates:
		// trade a little memory for less GC CPU per request (gctune.go).
		startGCTuner(minHeapGoal, gcBasePercent)
	}
	var logHandler slog.Handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo})
	if cfg.LogFormat == "json" {
		logHandler = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo})
	}
	log := slog.New(logHandler)
	applyMemoryLimit(cfg, os.Getenv, log)
	now, err := serviceClock(os.Getenv, log)
	if err != nil {
		return err
	}
	password, err := cfg.Password()
	if err != nil {
		return err
	}
	ca, err := pki.LoadCA(ctx, pki.LoadOptions{
		RootCert: cfg.Path(cfg.CA.Root), IntermediateCert: cfg.Path(cfg.CA.Intermediate),
		KeyURI: cfg.KeyURI(), Password: password,
	})
	if err != nil {
		return fmt.Errorf("load CA: %w", err)
	}
	defer ca.Close()
	if pki.IsPKCS11(cfg.CA.Key) {
		log.Info("issuing key in a PKCS#11 token", "key", pki.RedactKeyURI(cfg.CA.Key))
	}
	// The plain-HTTP listener is bound before the issuer is made: the URLs
	// certificates name must be those of the port actually bound.
	httpLn, err := listenPublication(cfg, dev)
	if err != nil {
		return err
	}
	if httpLn != nil {
		defer httpLn.Close()
	}
	crlURL, ocspURL, caIssuersURL := cfg.PublicationURLs()
	issuer, err := pki.NewIssuer(pki.IssuerOptions{
		CA: ca, TrustDomain: cfg.TrustDomain,
		CRLURL: crlURL, OCSPURL: ocspURL, CAIssuersURL: caIssuersURL, Now: now,
		CRLPartitions: max(0, cfg.CRL.Partitions),
	})
	if err != nil {
		return err
	}
	tlsCert, err := loadKeyPair(cfg.Path(cfg.TLS.Cert), cfg.Path(cfg.TLS.Key), password)
	if err != nil {
		return fmt.Errorf("load TLS certificate: %w", err)
	}
	if cfg.DB.Driver == sqlstore.DriverSQLite {
		// A shared lock for as long as this CA runs: 'ca restore' refuses
		// a registry in use, and this CA refuses one being restored.
		unlock, err := lockRegistry(cfg.DSN(), false)
		if errors.Is(err, errRegistryBusy) {
			return fmt.Errorf("%w (a 'ca restore' is writing it: wait for it to finish)", err)
		}
		if err != nil {
			return err
		}
		defer unlock()
	}
	mx := newMetrics(cfg, log)
	writers := &api.WriterGauge{} // the group commit waits for the requests in progress, no longer
	store, err := openServeStore(ctx, cfg, log, mx, writers.Writers)
	if err != nil {
		return err
	}
	defer store.Close()
	prefetchRegistry(ctx, cfg, store, log)
	if mx != nil {
		mx.WatchExpiring(store)
	}
	rev, err := newRevocation(ctx, cfg, ca, store, crlURL, log, false, mx)
	if err != nil {
		return err
	}
	// The CA's issuers as a rollover moves them: the registry says which
	// one signs (ca rollover ...), every replica follows within a poll.
	issuers := pki.NewIssuerSet(issuer)
	rollover, err := newRollover(cfg, ca, issuers, rev, store, now, password, log)
	if err != nil {
		return err
	}
	if err := rollover.Start(ctx); err != nil {
		return err
	}
	tpmCfg, err := tpmConfig(cfg, store)
	if err != nil {
		return err
	}
	provCfg := provision.Config{
		Store: store, Issuer: issuers, TrustDomain: cfg.TrustDomain, TPM: tpmCfg,
		Lifetime: time.Duration(cfg.Enrollment.CertLifetime), Profile: cfg.Enrollment.CertProfile(),
		TenantLimit: cfg.Limits.Tenant(), Now: now, RenewGrace: cfg.Renew.Grace(),
		Policy: pki.CSRPolicy{
			AllowP384: cfg.Enrollment.AllowP384, AllowEd25519: cfg.Enrollment.AllowEd25519, AllowRSA: cfg.Enrollment.AllowRSA,
		},
	}
	if mx != nil {
		provCfg.Metrics = mx
	}
	prov, err := provision.New(provCfg)
	if err != nil {
		return err
	}
	// devpki's own CA certificates: never a manufacturer's IDevID CA.
	ownCA := append([]*x509.Certificate{ca.Root}, issuer.Chain()...)
	adminCfg := provision.AdminConfig{
		Store: store, TrustDomain: cfg.TrustDomain, Log: log, CA: ownCA,
		Issuer: issuers, CertLifetime: time.Duration(cfg.Admin.CertLifetime), Now: now,
	}
	if rev != nil {
		adminCfg.Revoker = rev
	}
	admin, err := provision.NewAdmin(adminCfg)
	if err != nil {
		return err
	}
	// The enrollment doors and the attestor of each.
	attestors := provision.Attestors{
		Token:  provision.TokenAttestor{Store: store},
		IDevID: provision.IDevIDAttestor{Store: store, CA: ownCA},
	}
	if tpmCfg != nil {
		attestors.TPM = provision.TPMAttestor{Challenger: tpmCfg.Challenger, Store: store}
	}
	apiCfg := api.Config{
		Store: store, Provision: prov, Admin: admin, Attestors: attestors,
		Root: ca.Root, Chain: issuer.Chain(),
		TrustDomain: cfg.TrustDomain, Log: log, Revocation: rev,
		AccessLog: log.With("log", "access"), Limits: cfg.Limits.Door(), Now: now,
		Issuers: issuers, Rollover: rollover, Writers: writers,
	}
	if mx != nil {
		apiCfg.Metrics, apiCfg.MetricsHandler = mx, mx.Handler()
	}
	handler, err := api.New(apiCfg)
	if err != nil {
		return err
	}
	srv := api.NewHTTPServer(handler, api.TLSConfig(tlsCert, cfg.TLS.ClassicalKeyExchange), api.Timeouts{}, log)
	var pubSrv *http.Server
	if httpLn != nil {
		pub, err := api.NewPublic(api.Config{Root: ca.Root, Chain: issuer.Chain(), Revocation: rev, Log: log, Issuers: issuers,
			AccessLog: log.With("log", "access", "listener", "http")})
		if err != nil {
			return err
		}
		// Anyone may ask: short timeouts, small headers (a GET OCSP
		// request fits in a few hundred bytes of path), small bodies
		// (api.PublicMaxBodyBytes).
		pubSrv = &http.Server{
			Handler:           pub,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      10 * time.Second,
			IdleTimeout:       60 * time.Second,
			MaxHeaderBytes:    8 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		}
	}
	// Bound before the HTTPS listener announces itself, so that whoever
	// waits for "serving" may scrape at once.
	metricsCtx, stopMetrics := context.WithCancel(ctx)
	defer stopMetrics()
	metricsErr, err := serveMetrics(metricsCtx, cfg, mx, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another CA running? pass --listen ADDR)", cfg.Listen, err)
	}
	addr := ln.Addr().String()
	fp := pki.Fingerprint(ca.Root)
	if httpLn != nil {
		log.Info("serving publication", "addr", "http://"+httpLn.Addr().String(), "crl", crlURL, "ocsp", ocspURL, "ca_issuers", caIssuersURL)
	}
	log.Info("serving", "addr", "https://"+addr, "root_fingerprint", fp, "db", cfg.DB.Driver)
	if dev {
		if err := printDevInstructions(ctx, store, cfg, addr, fp, stdout); err != nil {
			ln.Close()
			return err
		}
	}
	// The CRL is built before the first request and kept fresh meanwhile.
	if err := rev.Refresh(ctx); err != nil {
		ln.Close()
		return fmt.Errorf("build the first CRL: %w", err)
	}
	revCtx, stopRev := context.WithCancel(ctx)
	defer stopRev()
	go rev.Run(revCtx)
	go rollover.Run(revCtx)
	go provision.RunRekeyDeadlines(revCtx, store, rev, time.Minute, log)
	errc := make(chan error, 2)
	go func() { errc <- api.ServeTLS(srv, ln, cfg.Limits.Door().MaxHandshakes) }()
	if pubSrv != nil {
		go func() { errc <- fmt.Errorf("plain-HTTP listener: %w", pubSrv.Serve(httpLn)) }()
	}
	select {
	case err := <-metricsErr:
		if pubSrv != nil {
			pubSrv.Close()
		}
		srv.Close()
		return err
	case err := <-errc:
		if pubSrv != nil {
			pubSrv.Close()
		}
		srv.Close()
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if pubSrv != nil {
		if perr := pubSrv.Shutdown(shutdownCtx); perr != nil {
			log.Warn("plain-HTTP listener shutdown", "err", perr)
		}
	}
	err = srv.Shutdown(shutdownCtx)
	batches, ops := store.BatchStats()
	log.Info("registry writes", "transactions", batches, "writes", ops)
	return err
}

// devHTTPListen is where 'ca serve --dev' publishes the CRL, OCSP and CA
// certificates over plain HTTP, unless the port is taken.
const devHTTPListen = "127.0.0.1:8080"

// listenPublication binds the plain-HTTP publication listener: cfg's
// http_listen, or in dev mode without one devHTTPListen, or a free loopback
// port when that is taken. It sets cfg.HTTPURL from the bound address when
// the config names none. nil when there is no plain listener.
func listenPublication(cfg *Config, dev bool) (net.Listener, error) {
	addr := cfg.HTTPListen
	if addr == "" && dev {
		addr = devHTTPListen
	}
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil && cfg.HTTPListen == "" && errors.Is(err, syscall.EADDRINUSE) {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		return nil, fmt.Errorf("plain-HTTP listen on %s: %w (pass --http-listen ADDR)", addr, err)
	}
	if cfg.HTTPURL == "" {
		cfg.HTTPURL = "http://" + ln.Addr().String()
	}
	return ln, nil
}

// newRevocation makes the OCSP responder (a fresh key and delegated
// certificate, recorded in the registry) and the CRL/OCSP service.
func newRevocation(ctx context.Context, cfg *Config, ca *pki.CA, store registry.Store, crlURL string, log *slog.Logger, secondary bool, mx *metrics.Metrics) (*provision.Revocation, error) {
	responder, err := pki.NewOCSPResponder(ctx, pki.OCSPResponderOptions{
		CA: ca, Lifetime: time.Duration(cfg.OCSP.ResponderLifetime),
		Issued: func(ctx context.Context, c *x509.Certificate) error {
			err := provision.RecordIssued(ctx, store, provision.SystemActor("ocsp", ""), c, registry.KindOCSP, "", time.Now())
			if err == nil {
				log.Info("OCSP responder certificate issued", "serial", c.SerialNumber.Text(16), "not_after", c.NotAfter.UTC().Format(time.RFC3339))
			}
			return err
		},
	})
	if err != nil {
		return nil, err
	}
	rc := provision.RevocationConfig{
		Store: store, CRLSigner: ca, OCSP: responder, CRLURL: crlURL,
		CRLValidity: time.Duration(cfg.CRL.Validity), Refresh: time.Duration(cfg.CRL.Refresh),
		OCSPValidity: time.Duration(cfg.OCSP.Validity), Log: log,
		IssuerKeyID: pki.KeyID(ca.Intermediate),
	}
	if mx != nil {
		rc.Metrics = mx
	}
	if secondary {
		return provision.NewIssuerRevocation(rc)
	}
	return provision.NewRevocation(rc)
}

func printDevInstructions(ctx context.Context, store registry.Store, cfg *Config, addr, fp string, w io.Writer) error {
	token, _, err := provision.MintToken(ctx, store, time.Now(), provision.TokenSpec{
		TTL: 24 * time.Hour, Uses: 1, Who: provision.SystemActor("dev", ""),
	})
	if err != nil {
		return fmt.Errorf("mint dev token: %w", err)
	}
	publication := ""
	if cfg.HTTPURL != "" {
		publication = fmt.Sprintf(`
CRL, OCSP and the CA certificate are published over plain HTTP at %[1]s
(certificates name %[1]s/crl, %[1]s/ocsp and %[1]s/ca.crt):

  curl -s %[1]s/crl | openssl crl -inform DER -noout -text
`, cfg.HTTPURL)
	}
	fmt.Fprintf(w, `
devpki CA (development mode) is serving on https://%[1]s
  data directory:   %[2]s
  root fingerprint: %[3]s
  bootstrap token:  %[4]s   (single use, valid 24h)

Enroll a device (serial and MAC are read from the machine when you leave them out):

  go run ./cmd/enroll --ca https://%[1]s --fingerprint %[3]s --token %[4]s --dir ./device-state --serial DEMO-0001 --mac 02:00:00:00:00:01

Then inspect the certificate:  openssl x509 -in ./device-state/device.crt -noout -text
%[5]s
`, addr, filepath.Dir(cfg.Path(fileConfig)), fp, token, publication)
	return nil
}

// loadKeyPair reads a PEM chain and an encrypted PEM key.
func loadKeyPair(certPath, keyPath string, password []byte) (tls.Certificate, error) {
	certs, err := pemutil.ReadCertificateBundle(certPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := pemutil.Read(keyPath, pemutil.WithPassword(password))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("read %s: %w (wrong passphrase?)", keyPath, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return tls.Certificate{}, fmt.Errorf("%s holds no private key", keyPath)
	}
	tc := tls.Certificate{PrivateKey: signer, Leaf: certs[0]}
	for _, c := range certs {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	if pub, ok := certs[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(signer.Public()) {
		return tls.Certificate{}, fmt.Errorf("%s does not match the key in %s", certPath, keyPath)
	}
	return tc, nil
}

// tpmConfig loads the TPM manufacturer roots and creates the challenger;
// nil when tpm.ek_roots is empty and tpm.enabled false. Pending challenges
// are kept in the registry (hashed secret only, single use, swept once
// expired), so a device may answer on any replica sharing the database.
func tpmConfig(cfg *Config, store provision.ChallengeRecorder) (*provision.TPMConfig, error) {
	if len(cfg.TPM.EKRoots) == 0 && !cfg.TPM.Enabled {
		return nil, nil
	}
	roots, err := loadCertPool(cfg, cfg.TPM.EKRoots)
	if err != nil {
		return nil, fmt.Errorf("tpm.ek_roots: %w", err)
	}
	inters, err := loadCertPool(cfg, cfg.TPM.EKIntermediates)
	if err != nil {
		return nil, fmt.Errorf("tpm.ek_intermediates: %w", err)
	}
	return &provision.TPMConfig{
		EKRoots: roots, EKIntermediates: inters, Tenant: cfg.TPM.Tenant,
		Challenger: verify.NewChallenger(verify.Config{
			Store: provision.NewChallengeStore(store), TTL: time.Duration(cfg.TPM.ChallengeTTL),
		}),
	}, nil
}

// loadCertPool reads every certificate of the PEM files (relative to the
// config's directory); each file must hold at least one.
func loadCertPool(cfg *Config, files []string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for _, f := range files {
		b, err := os.ReadFile(cfg.Path(f))
		if err != nil {
			return nil, err
		}
		n := 0
		for rest := b; ; {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				break
			}
			if blk.Type != "CERTIFICATE" {
				continue
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			pool.AddCert(c)
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("%s: no PEM certificate", f)
		}
	}
	return pool, nil
}
