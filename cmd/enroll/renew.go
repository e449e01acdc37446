package main

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"devpki/api/client"
	"devpki/api/wire"
	"devpki/pkg/atomicfile"
	"devpki/pkg/pki"
)

// caFile records, at enrollment, where the CA is and which root is pinned,
// so that renew, run and status need no flags.
const caFile = "ca.json"

// caInfo is the content of caFile.
type caInfo struct {
	URL         string `json:"url"`
	Fingerprint string `json:"fingerprint"`
	// Protocol is how the identity was enrolled and is renewed: "est"
	// (RFC 7030, with ESTLabel) or native ("" in files written before EST).
	Protocol string `json:"protocol,omitempty"`
	ESTLabel string `json:"est_label,omitempty"`
}

func saveCAInfo(dir string, ci caInfo) error {
	b, err := json.MarshalIndent(ci, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, caFile), append(b, '\n'), 0o644)
}

// loadCAInfo reads caFile; url and fingerprint, when not empty, override it.
func loadCAInfo(dir, url, fingerprint string) (caInfo, error) {
	var ci caInfo
	b, err := os.ReadFile(filepath.Join(dir, caFile))
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &ci); err != nil {
			return ci, fmt.Errorf("%s: %w", caFile, err)
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return ci, err
	}
	if url != "" {
		ci.URL = url
	}
	if fingerprint != "" {
		ci.Fingerprint = fingerprint
	}
	if ci.URL == "" || ci.Fingerprint == "" {
		return ci, usageErr("%s has no CA URL and root fingerprint: pass --ca and --fingerprint", filepath.Join(dir, caFile))
	}
	pin, err := client.NormalizeFingerprint(ci.Fingerprint)
	if err != nil {
		return ci, usageErr("fingerprint: %v", err)
	}
	ci.Fingerprint = pin
	switch ci.Protocol {
	case "", protocolNative, protocolEST:
	default:
		return ci, fmt.Errorf("%s: unknown protocol %q (this enroll speaks %s and %s)",
			filepath.Join(dir, caFile), ci.Protocol, protocolNative, protocolEST)
	}
	if err := client.ValidateESTLabel(ci.ESTLabel); err != nil {
		return ci, fmt.Errorf("%s: %w", filepath.Join(dir, caFile), err)
	}
	return ci, nil
}

// Replacing an identity. A renewal writes the new key, certificate and chain
// as .next files and keeps the current ones as .prev, then renames the .next
// files over the current ones, chain, key and certificate in that order. A
// crash between any two steps leaves one of these generations valid and
// matching, and recoverIdentity finds it (and rewrites the current files from
// it with saveIdentity), so the device never lacks a usable identity:
var candidates = []generation{
	current,
	{key: keyFile, cert: certFile + ".next", chain: chainFile}, // crashed after the key was renamed
	{key: keyFile + ".next", cert: certFile + ".next", chain: chainFile + ".next"},
	{key: keyFile + ".prev", cert: certFile + ".prev", chain: chainFile + ".prev"},
}

// Step names a point in replaceIdentity; the crash tests stop there.
const (
	stepPrevWritten = "renew-prev-written"
	stepNextWritten = "renew-next-written"
	stepChainMoved  = "renew-chain-moved"
	stepKeyMoved    = "renew-key-moved"
	stepCertMoved   = "renew-cert-moved"
)

// replaceIdentity installs id in dir, keeping the previous pair as .prev.
// failpoint runs after each step (see stepPrevWritten...); an error from it
// stops the replacement there, as a crash would.
func replaceIdentity(kr *keyring, id *identity, failpoint func(step string) error) error {
	dir := kr.dir
	if failpoint == nil {
		failpoint = func(string) error { return nil }
	}
	for _, f := range []string{keyFile, certFile, chainFile} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return fmt.Errorf("keep previous %s: %w", f, err)
		}
		perm := fs.FileMode(0o644)
		if f == keyFile {
			perm = 0o600
		}
		if err := writeFileAtomic(filepath.Join(dir, f+".prev"), b, perm); err != nil {
			return err
		}
	}
	if err := failpoint(stepPrevWritten); err != nil {
		return err
	}
	keyPEM, err := kr.encode(id.Key)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		perm fs.FileMode
	}{
		{keyFile, keyPEM, 0o600},
		{chainFile, encodeCerts(id.Chain...), 0o644},
		{certFile, encodeCerts(id.Cert), 0o644},
	} {
		if err := writeFileAtomic(filepath.Join(dir, f.name+".next"), f.data, f.perm); err != nil {
			return err
		}
	}
	if err := failpoint(stepNextWritten); err != nil {
		return err
	}
	for _, m := range []struct{ file, step string }{
		{chainFile, stepChainMoved}, {keyFile, stepKeyMoved}, {certFile, stepCertMoved},
	} {
		if err := os.Rename(filepath.Join(dir, m.file+".next"), filepath.Join(dir, m.file)); err != nil {
			return fmt.Errorf("install new %s: %w", m.file, err)
		}
		if err := atomicfile.SyncDir(dir); err != nil {
			return err
		}
		if err := failpoint(m.step); err != nil {
			return err
		}
	}
	return nil
}

// recoverIdentity is loadIdentity that also accepts what an interrupted
// replaceIdentity left: the first valid generation of candidates. When that
// is not the current one, the current files are rewritten from it
// (saveIdentity: a crash there again leaves a valid candidate).
func recoverIdentity(ctx context.Context, kr *keyring, pin string, now time.Time, logf func(string, ...any)) (*identity, error) {
	id, firstErr := loadGeneration(ctx, kr, current, pin, now)
	if firstErr == nil {
		return id, nil
	}
	for _, g := range candidates[1:] {
		id, err := loadGeneration(ctx, kr, g, pin, now)
		if err != nil {
			continue
		}
		logf("current identity is not usable (%v); restoring it from %s", firstErr, g.cert)
		if err := saveIdentity(kr, id); err != nil {
			return nil, fmt.Errorf("restore identity: %w", err)
		}
		return id, nil
	}
	return nil, firstErr
}

// renewOnce renews the identity in cfg.Dir over mTLS: same key unless rekey
// is set or the CA answers rekey-required, in which case a new key is made
// and its CSR (same serial and MACs) sent, still authenticated by the current
// certificate. The new identity replaces the old one only once it verifies.
func renewOnce(ctx context.Context, cfg *config, ci caInfo, rekey bool, failpoint func(string) error) (*identity, error) {
	kr := cfg.keyring()
	defer kr.close()
	old, err := loadForRenewal(ctx, kr, ci.Fingerprint, cfg.Now(), cfg.logf)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s holds no identity: enroll first: %w", cfg.Dir, err)
		}
		return nil, fmt.Errorf("load identity: %w", err)
	}
	if !cfg.Now().Before(old.Cert.NotAfter) {
		// It can no longer authenticate over mutual TLS (expired.go).
		return renewExpired(ctx, cfg, ci, kr, old, rekey, failpoint)
	}
	pool := x509.NewCertPool()
	for _, r := range old.roots() {
		pool.AddCert(r)
	}
	tc := tls.Certificate{PrivateKey: old.Key, Leaf: old.Cert, Certificate: [][]byte{old.Cert.Raw}}
	for _, c := range old.Chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	opts := []client.Option{client.WithRoots(pool), client.WithClientCertificate(tc)}
	if cfg.UserAgent != "" {
		opts = append(opts, client.WithUserAgent(cfg.UserAgent))
	}
	deadline := cfg.Now().Add(cfg.Timeout)
	if old.Cert.NotAfter.Before(deadline) {
		deadline = old.Cert.NotAfter
	}
	r := retrier{cfg: cfg, deadline: deadline}
	if ci.Protocol == protocolEST {
		id, err := reenrollEST(ctx, cfg, &r, kr, ci, old, rekey, opts)
		if err != nil {
			return nil, err
		}
		return installRenewed(ctx, cfg, kr, old, id, failpoint)
	}

	cl, err := client.New(ci.URL, opts...)
	if err != nil {
		return nil, usageErr("CA URL: %v", err)
	}
	key := old.Key
	req := &wire.RenewRequest{}
	var resp *wire.EnrollResponse
	for attempt := 0; ; attempt++ {
		if rekey && key == old.Key {
			if key, req, err = rekeyRequest(ctx, kr, old); err != nil {
				return nil, err
			}
			where := "software P-256 key"
			if tk, ok := key.(*tpmKey); ok {
				where = "P-256 key " + tk.name + " in the TPM, certified by its AK"
			}
			cfg.logf("re-keying: new %s; CSR for serial %s", where, old.Cert.Subject.SerialNumber)
		}
		err = r.do(ctx, "renew", func(ctx context.Context) (err error) {
			resp, err = cl.Renew(ctx, req)
			return err
		})
		if err != nil && client.IsRekeyRequired(err) && !rekey && attempt == 0 {
			cfg.logf("the CA requires a new key")
			rekey = true
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}
	// The trust bundle is refreshed at every renewal, before the answer is
	// checked: a rollover may have moved the CA to a root that a root
	// already trusted vouches for.
	var bundle []*x509.Certificate
	if err := r.do(ctx, "fetch the trust bundle", func(ctx context.Context) (err error) {
		bundle, err = cl.Roots(ctx)
		return err
	}); err != nil {
		cfg.logf("trust bundle not refreshed (%v); keeping the current one", err)
	} else if err := adoptTrust(cfg, kr.dir, old, bundle); err != nil {
		return nil, err
	}
	id, err := checkReply(resp, key, old.roots(), cfg.Now())
	if err != nil {
		return nil, fmt.Errorf("CA reply refused: %w", err)
	}
	return installRenewed(ctx, cfg, kr, old, id, failpoint)
}

// installRenewed replaces old by the verified renewal id (replaceIdentity)
// once id names the same device.
func installRenewed(ctx context.Context, cfg *config, kr *keyring, old, id *identity, failpoint func(string) error) (*identity, error) {
	if err := sameIdentity(old.Cert, id.Cert); err != nil {
		return nil, fmt.Errorf("CA reply refused: %w", err)
	}
	if err := replaceIdentity(kr, id, failpoint); err != nil {
		return nil, fmt.Errorf("save renewed identity: %w", err)
	}
	kr.pruneTPMKeys(ctx, cfg.logf)
	return id, nil
}

// rekeyRequest makes a new key, stored like the old one (software or TPM),
// and a CSR naming the serial and MACs of old's certificate.
func rekeyRequest(ctx context.Context, kr *keyring, old *identity) (crypto.Signer, *wire.RenewRequest, error) {
	key, der, certify, err := rekeyCSR(ctx, kr, old)
	if err != nil {
		return nil, nil, err
	}
	return key, &wire.RenewRequest{
		CSR:     string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
		Certify: certify,
	}, nil
}

// rekeyCSR makes a new key, stored like the old one, and its DER CSR naming
// the serial and MACs of old's certificate; for a TPM key also the AK's
// certification of it.
func rekeyCSR(ctx context.Context, kr *keyring, old *identity) (crypto.Signer, []byte, *wire.TPMCertificationParameters, error) {
	// A new TPM key is certified by the AK over the hash of the certificate
	// this renewal authenticates with: the CA checks it against the AK it
	// recorded at attestation before it certifies the new key.
	nonce := sha256.Sum256(old.Cert.Raw)
	key, certify, err := kr.newKeyLike(ctx, old.Key, nonce[:])
	if err != nil {
		return nil, nil, nil, tpmHint(err)
	}
	der, err := renewalCSR(key, old.Cert)
	if err != nil {
		return nil, nil, nil, err
	}
	return key, der, certify, nil
}

// renewalCSR is the DER CSR, signed by key, naming the serial and MACs of
// cert — what pki.NewDeviceCSR made at enrollment.
func renewalCSR(key crypto.Signer, cert *x509.Certificate) ([]byte, error) {
	var macs []string
	for _, u := range cert.URIs {
		if m, ok := strings.CutPrefix(u.String(), "urn:dev:mac:"); ok {
			macs = append(macs, m)
		}
	}
	der, err := pki.NewDeviceCSR(key, cert.Subject.SerialNumber, macs)
	if err != nil {
		return nil, tpmHint(fmt.Errorf("build CSR: %w", err))
	}
	return der, nil
}

// sameIdentity refuses a renewed certificate that names another device.
func sameIdentity(old, renewed *x509.Certificate) error {
	uris := func(c *x509.Certificate) []string {
		var s []string
		for _, u := range c.URIs {
			s = append(s, u.String())
		}
		return s
	}
	if old.Subject.String() != renewed.Subject.String() || !slices.Equal(uris(old), uris(renewed)) {
		return fmt.Errorf("renewed certificate names %s %v, not %s %v", renewed.Subject, uris(renewed), old.Subject, uris(old))
	}
	return nil
}

// renewAt is when the agent renews c: two thirds into its lifetime, less a
// random jitter of up to a twentieth of the lifetime so a fleet enrolled at
// once does not renew at once.
func renewAt(c *x509.Certificate, jitter func(time.Duration) time.Duration) time.Time {
	life := c.NotAfter.Sub(c.NotBefore)
	return c.NotBefore.Add(life*2/3 - jitter(life/20))
}
