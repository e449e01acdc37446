package provision

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/registry"
)

// MethodIDevID is the enrollment method of a device admitted by its factory
// IDevID certificate (IEEE 802.1AR).
const MethodIDevID = "idevid"

// Refusals of the IDevID admission (IDevIDAttestor). Nothing is written
// but the audit event of the refusal.
var (
	// ErrIDevIDRequired: no client certificate was presented.
	ErrIDevIDRequired = errors.New("provision: an IDevID client certificate is required")
	// ErrIDevIDUnknownManufacturer: the IDevID does not chain to a
	// manufacturer CA registered in any tenant ('ca idevid roots add').
	ErrIDevIDUnknownManufacturer = errors.New("provision: IDevID from an unknown manufacturer")
	// ErrIDevIDInvalid: the certificate is not an acceptable IDevID —
	// expired or not yet valid, a CA certificate, key usage that does not
	// allow client authentication, no or two serials, an extension that
	// cannot be read, trusted in several tenants, or a certificate of
	// devpki's own CA (which renews on /v1/renew, it does not enroll).
	ErrIDevIDInvalid = errors.New("provision: IDevID certificate not acceptable")
	// ErrIDevIDSerialMismatch: the CSR names another serial than the
	// IDevID. Nothing is signed.
	ErrIDevIDSerialMismatch = errors.New("provision: the CSR's serial is not the IDevID's")
)

// IDevIDName is how an IDevID is named in the audit log and to admins:
// its certificate serial (lowercase hex) at its issuer's DN.
func IDevIDName(issuer, serial string) string { return serial + "@" + issuer }

// IDevIDStore is what the IDevID admission reads. *sqlstore.Store
// implements it.
type IDevIDStore interface {
	ListIDevIDCAs(ctx context.Context, tenantID string) ([]*registry.IDevIDCA, error)
	GetTenant(ctx context.Context, name string) (*registry.Tenant, error)
}

// IDevIDAttestor admits a device by the factory IDevID certificate
// (IEEE 802.1AR) it presented as its TLS client certificate
// (Request.PeerCerts, leaf first, unverified). It knows no HTTP: every
// door (POST /v1/enroll without a token, EST simpleenroll) hands it the
// presented certificates.
//
// The leaf must chain, at Now, for client authentication, to a root
// registered for a tenant (registry.IDevIDCA; intermediates registered
// there, or sent by the device, complete the chain); the tenant holding
// that root is the tenant the device joins; a request addressed to a
// tenant (Request.Tenant, an EST label) is verified against that tenant's
// CAs only, so a manufacturer several tenants trust is no longer
// ambiguous there. The manufacturer CAs are read
// from the store on every admission (one indexed query), so a root added
// at runtime, on any replica, admits devices at once. A notAfter of
// 99991231235959Z (no expiry, as 802.1AR allows) is an ordinary date. The
// hardware serial is the subject's serialNumber or the serial of a
// hardwareModuleName otherName in the subjectAltName (RFC 4108); a
// critical subjectAltName holding only that name is read, not refused.
// The CSR must name that serial (ErrIDevIDSerialMismatch).
type IDevIDAttestor struct {
	Store IDevIDStore
	// CA are devpki's own CA certificates (root and issuing chain): a
	// certificate they issued is never an IDevID. Nil checks nothing.
	CA []*x509.Certificate
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Admit verifies req.PeerCerts as an IDevID (see IDevIDAttestor) and
// admits its serial into the tenant of the root it chains to.
func (a IDevIDAttestor) Admit(ctx context.Context, req *Request) (*Admission, error) {
	if len(req.PeerCerts) == 0 || req.PeerCerts[0] == nil {
		return nil, fmt.Errorf("%w: present the device's factory IDevID as the TLS client certificate, or a bootstrap token",
			ErrIDevIDRequired)
	}
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	leaf := req.PeerCerts[0]
	if err := a.notOurs(req.PeerCerts); err != nil {
		return nil, err
	}
	id, err := pki.ParseIDevID(leaf)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIDevIDInvalid, err)
	}
	if err := checkIDevIDLeaf(leaf, now()); err != nil {
		return nil, err
	}
	tenantID, err := a.verify(ctx, id, req.PeerCerts[1:], req.Tenant, now())
	if err != nil {
		return nil, err
	}
	name := IDevIDName(id.Issuer, id.CertSerial)
	return &Admission{
		Method:       MethodIDevID,
		TenantID:     tenantID,
		Actor:        Actor{Kind: ActorIDevID, ID: name, TenantID: tenantID, Source: req.SourceAddr},
		BoundSerial:  id.Serial,
		BoundBy:      "idevid",
		IDevIDIssuer: id.Issuer,
		IDevIDSerial: id.CertSerial,
	}, nil
}

// notOurs refuses certificates of devpki's own CA: a device with one
// renews it; it is no factory identity.
func (a IDevIDAttestor) notOurs(certs []*x509.Certificate) error {
	for _, c := range certs {
		if own := issuedByCA(c, a.CA); own != nil {
			return fmt.Errorf("%w: %s (serial %s) was issued by this CA (%s): a devpki certificate is not a factory IDevID; "+
				"renew it on /v1/renew ('enroll renew') or enroll with a bootstrap token", ErrIDevIDInvalid,
				c.Subject, c.SerialNumber.Text(16), own.Subject)
		}
	}
	return nil
}

// issuedByCA returns the certificate of ca that c is, or that signed c; nil
// if none.
func issuedByCA(c *x509.Certificate, ca []*x509.Certificate) *x509.Certificate {
	for _, own := range ca {
		if bytes.Equal(c.Raw, own.Raw) {
			return own
		}
		if bytes.Equal(c.RawIssuer, own.RawSubject) && c.CheckSignatureFrom(own) == nil {
			return own
		}
	}
	return nil
}

// checkIDevIDLeaf refuses, with a readable reason, a leaf outside its
// validity at now, a CA certificate, or one whose key usage does not allow
// signing (TLS client authentication).
func checkIDevIDLeaf(leaf *x509.Certificate, now time.Time) error {
	name := fmt.Sprintf("IDevID %q (serial %s)", leaf.Subject.String(), leaf.SerialNumber.Text(16))
	switch {
	case now.After(leaf.NotAfter):
		return fmt.Errorf("%w: %s expired at %s (now %s)", ErrIDevIDInvalid, name,
			leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("%w: %s is not valid before %s (now %s)", ErrIDevIDInvalid, name,
			leaf.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case leaf.IsCA:
		return fmt.Errorf("%w: %s is a CA certificate, not a device's IDevID", ErrIDevIDInvalid, name)
	case leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0:
		return fmt.Errorf("%w: wrong key usage: %s does not allow digitalSignature, which TLS client authentication needs",
			ErrIDevIDInvalid, name)
	}
	return nil
}

// verify finds the tenant whose manufacturer CAs verify id's leaf (with
// the device's own intermediates sent): among every tenant's, or only
// among those of the tenant named addressed when it is known.
func (a IDevIDAttestor) verify(ctx context.Context, id *pki.IDevID, sent []*x509.Certificate, addressed string, now time.Time) (string, error) {
	only := ""
	if addressed != "" {
		// An unknown tenant is the pipeline's to refuse (addressedTenant).
		if t, err := a.Store.GetTenant(ctx, addressed); err == nil {
			only = t.ID
		} else if !errors.Is(err, registry.ErrNotFound) {
			return "", fmt.Errorf("look up tenant %q: %w", addressed, err)
		}
	}
	cas, err := a.Store.ListIDevIDCAs(ctx, only)
	if err != nil {
		return "", fmt.Errorf("read the manufacturer IDevID CAs: %w", err)
	}
	type pools struct{ roots, inter *x509.CertPool }
	byTenant := map[string]*pools{}
	for _, c := range cas {
		cert, err := x509.ParseCertificate(c.DER)
		if err != nil {
			continue // checked when added; an unreadable record trusts nothing
		}
		p := byTenant[c.TenantID]
		if p == nil {
			p = &pools{roots: x509.NewCertPool(), inter: x509.NewCertPool()}
			for _, s := range sent {
				p.inter.AddCert(s)
			}
			byTenant[c.TenantID] = p
		}
		if c.Kind == registry.IDevIDRoot {
			p.roots.AddCert(cert)
		} else {
			p.inter.AddCert(cert)
		}
	}
	tenants := make([]string, 0, len(byTenant))
	for t := range byTenant {
		tenants = append(tenants, t)
	}
	sort.Strings(tenants)
	var (
		found   []string
		failure error
	)
	for _, t := range tenants {
		_, err := id.Verifiable.Verify(x509.VerifyOptions{
			Roots: byTenant[t].roots, Intermediates: byTenant[t].inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		})
		if err != nil {
			if failure == nil || !errors.As(err, new(x509.UnknownAuthorityError)) {
				failure = err
			}
			continue
		}
		found = append(found, t)
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) > 1:
		return "", fmt.Errorf("%w: the manufacturer of IDevID %s is trusted by several tenants (%s); "+
			"register its CA in one tenant only", ErrIDevIDInvalid, IDevIDName(id.Issuer, id.CertSerial), strings.Join(found, ", "))
	}
	var inv x509.CertificateInvalidError
	if errors.As(failure, &inv) {
		what := "is not acceptable"
		switch inv.Reason {
		case x509.IncompatibleUsage:
			what = "has the wrong key usage: its extended key usage (or its CA's) does not allow TLS client authentication"
		case x509.Expired:
			what = "chains to a manufacturer CA that is expired or not yet valid"
		}
		return "", fmt.Errorf("%w: IDevID %s %s (%v)", ErrIDevIDInvalid, IDevIDName(id.Issuer, id.CertSerial), what, inv)
	}
	var unhandled x509.UnhandledCriticalExtension
	if errors.As(failure, &unhandled) {
		return "", fmt.Errorf("%w: IDevID %s carries a critical extension devpki cannot read (%v)",
			ErrIDevIDInvalid, IDevIDName(id.Issuer, id.CertSerial), failure)
	}
	return "", fmt.Errorf("%w: IDevID %s issued by %q does not chain to a manufacturer CA registered for any tenant "+
		"(an administrator adds it with 'ca idevid roots add FILE')", ErrIDevIDUnknownManufacturer,
		IDevIDName(id.Issuer, id.CertSerial), id.Issuer)
}
