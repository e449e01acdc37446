package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// newRollover wires the CA rollover: the initial issuer from the config's
// files, later ones from the registry (keys written next to ca.yaml,
// encrypted with the CA passphrase), each with its own CRL and OCSP
// responder. Replicas re-read the issuers every crl.refresh (default 30s).
func newRollover(cfg *Config, ca *pki.CA, issuers *pki.IssuerSet, rev *provision.Revocation, store registry.Store, now func() time.Time,
	password []byte, log *slog.Logger) (*provision.Rollover, error) {
	crlURL, ocspURL, caIssuersURL := cfg.PublicationURLs()
	dir := filepath.Dir(cfg.Path(fileConfig))
	rootKey := cfg.CA.RootKey
	if rootKey == "" {
		rootKey = pki.RootKeyFile
		if _, err := os.Stat(cfg.Path(rootKey)); err != nil {
			rootKey = ""
		}
	}
	if rootKey != "" {
		rootKey = cfg.Path(rootKey)
	}
	rs, ok := store.(provision.RolloverStore)
	if !ok {
		return nil, errMissingRolloverStore
	}
	return provision.NewRollover(provision.RolloverConfig{
		Store: rs, Issuers: issuers, Initial: ca, InitialKeyURI: cfg.KeyURI(), InitialRootKeyURI: rootKey,
		Dir: dir, Password: password,
		Template: pki.IssuerOptions{TrustDomain: cfg.TrustDomain, CRLURL: crlURL, OCSPURL: ocspURL, CAIssuersURL: caIssuersURL,
			Now: now, CRLPartitions: max(0, cfg.CRL.Partitions)},
		Revocation: rev,
		NewRevocation: func(ctx context.Context, ca *pki.CA, _ string) (*provision.Revocation, error) {
			return newRevocation(ctx, cfg, ca, store, "", log, true, nil)
		},
		Poll: time.Duration(cfg.CRL.Refresh),
		Log:  log,
	})
}

var errMissingRolloverStore = errors.New("the registry store cannot record CA issuers")
