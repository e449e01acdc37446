package provision

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"devpki/pkg/pki"
	"devpki/pkg/registry"
)

// IDevIDCAAdded is one certificate of an AddIDevIDRoot: the record as
// stored, and whether this call added it (false: the tenant trusted it
// already, and nothing was written for it).
type IDevIDCAAdded struct {
	CA    *registry.IDevIDCA
	Added bool
}

// AddIDevIDRoot trusts a device manufacturer's CA certificates for factory
// IDevID enrollment (IDevIDAttestor) in tenant (a name; "" means who's own
// tenant; one out of who's scope is registry.ErrNotFound, as an unknown one).
// pemBytes holds one or more PEM CERTIFICATE blocks, roots and
// intermediates in any order; each must be a CA certificate, and is kept as
// what it is: a self-signed one as a root (a trust anchor), any other as an
// intermediate (it completes chains, and verifies only up to a root of the
// tenant). devpki's own CA certificates, and certificates they issued, are
// refused: a devpki certificate is not an IDevID.
//
// Adding a certificate the tenant already trusts is idempotent: it is
// reported with Added false and nothing is written for it. Each added
// certificate is its own audited write (ActionIDevIDCAAdd). A bad
// certificate anywhere in pemBytes is ErrInvalidArgument and nothing is
// written. Refusals are audited.
func (a *Admin) AddIDevIDRoot(ctx context.Context, who Actor, tenant string, pemBytes []byte) ([]IDevIDCAAdded, error) {
	tn, err := a.idevidTenant(ctx, who, tenant)
	if err != nil {
		return nil, a.refused(ctx, who, ActionIDevIDCAAdd, tenant, err)
	}
	certs, err := ParseIDevIDCAs(pemBytes, a.cfg.CA)
	if err != nil {
		return nil, a.refused(ctx, who, ActionIDevIDCAAdd, tn.Name, err)
	}
	have, err := a.cfg.Store.ListIDevIDCAs(ctx, tn.ID)
	if err != nil {
		return nil, fmt.Errorf("read the IDevID CAs of tenant %q: %w", tn.Name, err)
	}
	out := make([]IDevIDCAAdded, 0, len(certs))
	for _, c := range certs {
		fp := pki.Fingerprint(c)
		if i := indexFingerprint(have, fp); i >= 0 {
			out = append(out, IDevIDCAAdded{CA: have[i]})
			continue
		}
		rec := &registry.IDevIDCA{ID: NewUUID(), TenantID: tn.ID, Fingerprint: fp, DER: c.Raw, Subject: c.Subject.String(),
			Kind: idevidKind(c), AddedBy: who.String()}
		err := a.cfg.Store.PutIDevIDCA(ctx, rec, event(who, tn.ID, ActionIDevIDCAAdd, fp, registry.ResultOK,
			fmt.Sprintf("%s %s tenant=%s", rec.Kind, rec.Subject, tn.Name)))
		if errors.Is(err, registry.ErrAlreadyExists) {
			// Added meanwhile by another request: as idempotent as above.
			if now, lerr := a.cfg.Store.ListIDevIDCAs(ctx, tn.ID); lerr == nil {
				if i := indexFingerprint(now, fp); i >= 0 {
					out = append(out, IDevIDCAAdded{CA: now[i]})
					continue
				}
			}
		}
		if err != nil {
			return out, a.refused(ctx, who, ActionIDevIDCAAdd, fp, fmt.Errorf("add IDevID CA %s: %w", c.Subject, err))
		}
		out = append(out, IDevIDCAAdded{CA: rec, Added: true})
	}
	return out, nil
}

// ListIDevIDRoots returns the manufacturer IDevID CAs of tenant ("" means
// who's own), oldest first; a tenant out of who's scope is
// registry.ErrNotFound.
func (a *Admin) ListIDevIDRoots(ctx context.Context, who Actor, tenant string) ([]*registry.IDevIDCA, error) {
	tn, err := a.idevidTenant(ctx, who, tenant)
	if err != nil {
		return nil, a.refused(ctx, who, ActionAdminDenied, "idevid roots "+tenant, err)
	}
	return a.cfg.Store.ListIDevIDCAs(ctx, tn.ID)
}

// idevidTenant resolves the tenant named for an IDevID CA action: ""
// means who's own (the default tenant for a super-admin); one out of who's
// scope is registry.ErrNotFound, as an unknown one.
func (a *Admin) idevidTenant(ctx context.Context, who Actor, name string) (*registry.Tenant, error) {
	var (
		tn  *registry.Tenant
		err error
	)
	switch {
	case name == "" && who.TenantID != "":
		tn, err = a.cfg.Store.GetTenantByID(ctx, who.TenantID)
	case name == "":
		name = registry.DefaultTenant
		fallthrough
	default:
		tn, err = a.cfg.Store.GetTenant(ctx, name)
	}
	if err != nil && !errors.Is(err, registry.ErrNotFound) {
		return nil, fmt.Errorf("tenant %q: %w", name, err)
	}
	if err != nil || !InScope(who, tn.ID) {
		return nil, fmt.Errorf("no tenant %q in your scope: %w", name, registry.ErrNotFound)
	}
	return tn, nil
}

func indexFingerprint(cas []*registry.IDevIDCA, fp string) int {
	for i, c := range cas {
		if c.Fingerprint == fp {
			return i
		}
	}
	return -1
}

// idevidKind is a root for a self-signed certificate, else an
// intermediate.
func idevidKind(c *x509.Certificate) registry.IDevIDCAKind {
	if selfSigned(c) {
		return registry.IDevIDRoot
	}
	return registry.IDevIDIntermediate
}

func selfSigned(c *x509.Certificate) bool {
	return string(c.RawSubject) == string(c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}

// ParseIDevIDCAs reads a bundle of manufacturer CA certificates: one or
// more PEM CERTIFICATE blocks and nothing else, each a CA certificate
// (basic constraints cA), none of them of own (devpki's CA) or issued by
// it. Anything else is ErrInvalidArgument.
func ParseIDevIDCAs(pemBytes []byte, own []*x509.Certificate) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := pemBytes
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: PEM block %d is %q, want CERTIFICATE", ErrInvalidArgument, len(out)+1, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %v", ErrInvalidArgument, len(out)+1, err)
		}
		if !c.IsCA || !c.BasicConstraintsValid {
			return nil, fmt.Errorf("%w: %s is not a CA certificate (a manufacturer root or intermediate; "+
				"the device's own IDevID is not added)", ErrInvalidArgument, c.Subject)
		}
		if o := issuedByCA(c, own); o != nil {
			return nil, fmt.Errorf("%w: %s is this CA's own certificate or issued by it (%s): a devpki certificate is not "+
				"a manufacturer's IDevID CA", ErrInvalidArgument, c.Subject, o.Subject)
		}
		out = append(out, c)
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, fmt.Errorf("%w: text after the last PEM block, or no PEM at all", ErrInvalidArgument)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no PEM CERTIFICATE block", ErrInvalidArgument)
	}
	return out, nil
}
