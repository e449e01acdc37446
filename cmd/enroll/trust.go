package main

import (
	"crypto/x509"
	"fmt"
	"path/filepath"

	"devpki/pkg/pki"
)

// adoptTrust refreshes the device's trust bundle from bundle (the CA's
// /v1/ca/roots or EST cacerts): a root it does not trust yet is added only
// when a root it already trusts vouches for it with a cross certificate in
// the bundle (pki.AdoptRoots). A root without one is refused — logged, the
// bundle kept as it was. Adopted roots are appended to root.crt, replaced
// atomically, and to old, so that the renewal's answer is checked against
// them.
func adoptTrust(cfg *config, dir string, old *identity, bundle []*x509.Certificate) error {
	adopted, refused := pki.AdoptRoots(old.roots(), bundle, cfg.Now())
	for _, err := range refused {
		cfg.logf("trust bundle: refused a new root: %v; keeping the current trust bundle", err)
	}
	if len(adopted) == 0 {
		return nil
	}
	roots := append(old.roots(), adopted...)
	if err := writeFileAtomic(filepath.Join(dir, rootFile), encodeCerts(roots...), 0o644); err != nil {
		return fmt.Errorf("save the trust bundle: %w", err)
	}
	old.Extra = roots[1:]
	for _, r := range adopted {
		cfg.logf("trust bundle: adopted root %q (fingerprint %s), vouched for by a root already trusted", r.Subject.String(), pki.Fingerprint(r))
	}
	return nil
}
