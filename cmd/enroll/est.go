package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"devpki/api/client"
	"devpki/pkg/pki"
)

// Enrollment over EST (RFC 7030), --protocol est: against devpki's own
// /.well-known/est or any other EST server. The first run fetches cacerts
// without trusting the server and pins the root by --fingerprint (the bundle
// must hold it, and the server's TLS chain must verify to it); then it sends
// the CSR to simpleenroll with the bootstrap token (HTTP Basic, user name =
// the device serial, or Bearer). ca.json records the protocol and label, so
// renew, rekey and run renew over simplereenroll, authenticated by the
// current certificate in the TLS handshake (signed in the TPM for a TPM key),
// and install the result with the same crash-safe replacement as the native
// path (replaceIdentity). Everything else — state files, key storage, retries,
// exit codes — is the native path's.
const (
	protocolNative = "native"
	protocolEST    = "est"
)

// checkProtocol validates --protocol, --est-label and --est-auth.
func checkProtocol(cfg *config) error {
	switch cfg.Protocol {
	case "", protocolNative:
		cfg.Protocol = protocolNative
		if cfg.ESTLabel != "" {
			return usageErr("--est-label needs --protocol est")
		}
		if cfg.ESTAuth != "" && cfg.ESTAuth != "basic" {
			return usageErr("--est-auth needs --protocol est")
		}
	case protocolEST:
		if err := client.ValidateESTLabel(cfg.ESTLabel); err != nil {
			return usageErr("--est-label: %v", err)
		}
		switch cfg.ESTAuth {
		case "":
			cfg.ESTAuth = "basic"
		case "basic", "bearer":
		default:
			return usageErr("--est-auth %q: want basic or bearer", cfg.ESTAuth)
		}
	default:
		return usageErr("--protocol %q: want native or est", cfg.Protocol)
	}
	return nil
}

// enrollEST is runEnroll's EST path, from after the idempotence check. The
// state directory is not touched until cacerts has been fetched and pinned.
func enrollEST(ctx context.Context, cfg config, kr *keyring, pin string) error {
	if cfg.Token == "" {
		return usageErr("--protocol est needs a bootstrap token: --token, --token-file or DEVPKI_TOKEN")
	}
	serial, macs, err := identityClaims(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	r := retrier{cfg: &cfg, deadline: cfg.Now().Add(cfg.Timeout)}

	var root *x509.Certificate
	var inter []*x509.Certificate
	if err := r.do(ctx, "EST cacerts", func(ctx context.Context) (err error) {
		root, inter, err = client.FetchESTCACertsPinned(ctx, cfg.CA, cfg.ESTLabel, pin)
		return err
	}); err != nil {
		return err
	}
	cfg.logf("EST: pinned root %s (%s), %d intermediate(s)", pin, root.Subject, len(inter))

	if err := ensureStateDir(cfg.Dir); err != nil {
		return err
	}
	t, err := cfg.openEnrollTPM(ctx)
	if err != nil {
		return err
	}
	var key crypto.Signer
	if t != nil {
		defer t.Close()
		// EST carries no TPM attestation: the token admits the device, and
		// the key is made in the TPM and never leaves it.
		if key, _, err = newTPMKey(ctx, t, nil); err != nil {
			return tpmHint(fmt.Errorf("TPM: %w", err))
		}
	} else {
		pw, err := keyPassword(cfg.Dir, cfg.KeyPasswordFile, true)
		if err != nil {
			return err
		}
		// On disk before the CSR leaves: a lost answer is asked again with
		// the same key.
		if key, err = pendingKey(cfg.Dir, pw, cfg.logf); err != nil {
			return err
		}
	}
	csr, err := pki.NewDeviceCSR(key, serial, macs)
	if err != nil {
		return tpmHint(fmt.Errorf("build CSR: %w", err))
	}
	est, err := cfg.estClient(cfg.CA, cfg.ESTLabel, root)
	if err != nil {
		return err
	}
	auth := client.ESTAuth{Username: serial, Password: cfg.Token}
	if cfg.ESTAuth == "bearer" {
		auth = client.ESTAuth{Bearer: cfg.Token}
	}
	cfg.logf("EST simpleenroll: serial %s mac %s", serial, strings.Join(macs, ","))
	var resp *client.ESTCertificate
	if err := r.do(ctx, "EST simpleenroll", func(ctx context.Context) (err error) {
		resp, err = est.SimpleEnroll(ctx, csr, auth)
		return err
	}); err != nil {
		return estHint(err, "the bootstrap token (and --est-auth basic|bearer)")
	}
	id, err := estIdentity(resp, key, []*x509.Certificate{root}, inter, cfg.Now())
	if err != nil {
		return fmt.Errorf("EST answer refused: %w", err)
	}
	if t != nil {
		if err := kr.useTPM(t, cfg.TPM); err != nil {
			return fmt.Errorf("record the TPM: %w", err)
		}
	}
	ci := caInfo{URL: cfg.CA, Fingerprint: pin, Protocol: protocolEST, ESTLabel: cfg.ESTLabel}
	return finishEnroll(ctx, &cfg, kr, id, ci, "")
}

// reenrollEST renews old over simplereenroll: a CSR signed by the current
// key, or by a new one (stored like it) when rekey is set or the server
// answers rekey-required. opts carry the pinned root and the current
// certificate as TLS client certificate.
func reenrollEST(ctx context.Context, cfg *config, r *retrier, kr *keyring, ci caInfo, old *identity, rekey bool, opts []client.Option) (*identity, error) {
	est, err := client.NewEST(ci.URL, ci.ESTLabel, opts...)
	if err != nil {
		return nil, usageErr("CA URL: %v", err)
	}
	var (
		key   crypto.Signer
		csr   []byte
		resp  *client.ESTCertificate
		exact bool // the CSR repeats the certificate's Subject and SAN bytes
	)
	for attempt := 0; ; attempt++ {
		switch {
		case rekey && (key == nil || key == old.Key):
			// A TPM key's certification by the AK has no place in EST:
			// the TLS handshake with the current certificate is the proof.
			if key, csr, _, err = rekeyCSR(ctx, kr, old); err != nil {
				return nil, err
			}
			where := "software P-256 key"
			if tk, ok := key.(*tpmKey); ok {
				where = "P-256 key " + tk.name + " in the TPM"
			}
			cfg.logf("re-keying over EST: new %s; CSR for serial %s", where, old.Cert.Subject.SerialNumber)
		case key == nil:
			key = old.Key
			if csr, err = renewalCSR(key, old.Cert); err != nil {
				return nil, err
			}
		}
		if exact {
			if csr, err = exactRenewalCSR(key, old.Cert); err != nil {
				return nil, err
			}
		}
		err = r.do(ctx, "EST simplereenroll", func(ctx context.Context) (err error) {
			resp, err = est.SimpleReenroll(ctx, csr)
			return err
		})
		if err != nil && !rekey && attempt == 0 && isESTRekeyRequired(err) {
			cfg.logf("the CA requires a new key")
			rekey = true
			continue
		}
		if err != nil && !exact && attempt < 2 && isStatus(err, http.StatusBadRequest) && !sameNames(csr, old.Cert) {
			// RFC 7030 §4.2.2: the CSR's Subject and SAN must be those of
			// the certificate. devpki's CA accepts (and names in its
			// certificates) more than a device CSR may ask for, so the
			// first CSR is the enrollment's; a strict server gets the
			// certificate's own names on the second try.
			cfg.logf("EST simplereenroll refused the enrollment-shaped CSR (%v); retrying with the certificate's exact subject and SAN", err)
			exact = true
			continue
		}
		if err != nil {
			return nil, estHint(err, "the current certificate (revoked, superseded, or not one this server issued?)")
		}
		break
	}
	// The trust bundle is refreshed at every renewal: cacerts names the
	// CA's roots and, during a root rollover, the cross certificates that
	// vouch for the new one (RFC 7030 §4.1.3).
	bundle, berr := est.CACerts(ctx)
	if berr != nil {
		cfg.logf("EST cacerts: %v; keeping the trust bundle as it is", berr)
	} else if err := adoptTrust(cfg, kr.dir, old, bundle); err != nil {
		return nil, err
	}
	id, err := estIdentity(resp, key, old.roots(), old.Chain, cfg.Now())
	if err != nil {
		// The CA may have rolled its issuing key: cacerts names the new one.
		if berr != nil {
			return nil, fmt.Errorf("EST answer refused: %w", err)
		}
		if id, err = estIdentity(resp, key, old.roots(), bundle, cfg.Now()); err != nil {
			return nil, fmt.Errorf("EST answer refused: %w", err)
		}
	}
	return id, nil
}

// exactRenewalCSR is a CSR signed by key that repeats cert's Subject and
// subjectAltName extension byte for byte (RFC 7030 §4.2.2).
func exactRenewalCSR(key crypto.Signer, cert *x509.Certificate) ([]byte, error) {
	tmpl := &x509.CertificateRequest{RawSubject: cert.RawSubject}
	for _, e := range cert.Extensions {
		if e.Id.Equal(oidSubjectAltName) {
			tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: e.Id, Value: e.Value})
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, tpmHint(fmt.Errorf("build CSR: %w", err))
	}
	return der, nil
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// sameNames reports whether the CSR csrDER already carries cert's Subject
// and subjectAltName bytes.
func sameNames(csrDER []byte, cert *x509.Certificate) bool {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil || !bytes.Equal(csr.RawSubject, cert.RawSubject) {
		return false
	}
	san := func(exts []pkix.Extension) []byte {
		for _, e := range exts {
			if e.Id.Equal(oidSubjectAltName) {
				return e.Value
			}
		}
		return nil
	}
	return bytes.Equal(san(csr.Extensions), san(cert.Extensions))
}

func isStatus(err error, status int) bool {
	var re *client.ResponseError
	return errors.As(err, &re) && re.StatusCode == status
}

// isESTRekeyRequired reports whether err is a CA's refusal of the current
// key: devpki's 409 rekey-required, as a problem or in a text body.
func isESTRekeyRequired(err error) bool {
	if client.IsRekeyRequired(err) {
		return true
	}
	var re *client.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusConflict && strings.Contains(strings.ToLower(re.Body), "rekey-required")
}

// estClient is an EST client of url that trusts only root.
func (c *config) estClient(url, label string, root *x509.Certificate) (*client.EST, error) {
	pool := x509.NewCertPool()
	pool.AddCert(root)
	opts := []client.Option{client.WithRoots(pool)}
	if c.UserAgent != "" {
		opts = append(opts, client.WithUserAgent(c.UserAgent))
	}
	est, err := client.NewEST(url, label, opts...)
	if err != nil {
		return nil, usageErr("--ca: %v", err)
	}
	return est, nil
}

// estIdentity checks an EST answer: its certificate is for key and chains to
// root through intermediates (from cacerts, the previous chain, or the
// answer itself). The identity's chain is the one that verified, without the
// root.
func estIdentity(resp *client.ESTCertificate, key crypto.Signer, trusted []*x509.Certificate, intermediates []*x509.Certificate, now time.Time) (*identity, error) {
	leaf := resp.Certificate
	at := now
	if at.Before(leaf.NotBefore) {
		at = leaf.NotBefore // a device clock behind the CA's: verifyIdentity judges it the same way
	}
	roots := x509.NewCertPool()
	for _, r := range trusted {
		roots.AddCert(r)
	}
	pool := x509.NewCertPool()
	for _, c := range append(append([]*x509.Certificate{}, intermediates...), resp.Extra...) {
		pool.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: pool, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, fmt.Errorf("certificate %s (%s) does not verify to the pinned root: %w", leaf.SerialNumber.Text(16), leaf.Subject, err)
	}
	chain := chains[0]
	id := &identity{Key: key, Cert: leaf, Root: trusted[0], Extra: trusted[1:], Chain: chain[1 : len(chain)-1]}
	if err := verifyIdentity(id, now); err != nil {
		return nil, err
	}
	return id, nil
}

// estHint adds what to check when an EST server answers 401 or 403:
// credential names what authenticated the request.
func estHint(err error, credential string) error {
	var re *client.ResponseError
	if !errors.As(err, &re) {
		return err
	}
	switch re.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("%w; the EST server refused the request: check %s", err, credential)
	}
	return err
}
