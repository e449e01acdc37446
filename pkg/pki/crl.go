package pki

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/smallstep/certificates/cas/apiv1"
)

// RevokedCert is one entry of a CRL.
type RevokedCert struct {
	Serial    *big.Int
	RevokedAt time.Time
	// Reason is the RFC 5280 CRLReason code; 0 (unspecified) is encoded by
	// leaving the reasonCode extension out, as RFC 5280 asks.
	Reason int
}

// CRLTemplate is what SignCRL signs. Number, ThisUpdate and NextUpdate are
// required; an empty Revoked makes a valid, empty CRL.
type CRLTemplate struct {
	Number     int64 // the cRLNumber extension; strictly increasing per issuer
	ThisUpdate time.Time
	NextUpdate time.Time
	Revoked    []RevokedCert
	// IDP, when it has a URI, makes this a partition CRL: it carries IDP as
	// its critical issuing distribution point (RFC 5280 §5.2.5). Nil: a
	// full CRL.
	IDP *IDP
}

// SignCRL builds an RFC 5280 v2 CRL from t and signs it with the issuing
// intermediate through the CAS's CreateCRL. The CRL carries the
// intermediate's subject as issuer and its subject key id as authority key
// identifier. It returns the DER.
func (ca *CA) SignCRL(ctx context.Context, t *CRLTemplate) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sign CRL: %w", err)
	}
	switch {
	case t == nil:
		return nil, errors.New("sign CRL: nil template")
	case t.Number <= 0:
		return nil, fmt.Errorf("sign CRL: number %d is not positive", t.Number)
	case t.ThisUpdate.IsZero() || !t.NextUpdate.After(t.ThisUpdate):
		return nil, errors.New("sign CRL: NextUpdate must be after a non-zero ThisUpdate")
	}
	gen, ok := ca.CAS.(apiv1.CertificateAuthorityCRLGenerator)
	if !ok {
		return nil, fmt.Errorf("sign CRL: the CA backend %T cannot create CRLs", ca.CAS)
	}
	entries := make([]x509.RevocationListEntry, len(t.Revoked))
	for i, r := range t.Revoked {
		if r.Serial == nil || r.Serial.Sign() <= 0 {
			return nil, fmt.Errorf("sign CRL: entry %d: serial must be positive", i)
		}
		entries[i] = x509.RevocationListEntry{SerialNumber: r.Serial, RevocationTime: r.RevokedAt.UTC(), ReasonCode: r.Reason}
	}
	rl := &x509.RevocationList{
		Number:                    big.NewInt(t.Number),
		ThisUpdate:                t.ThisUpdate.UTC(),
		NextUpdate:                t.NextUpdate.UTC(),
		RevokedCertificateEntries: entries,
	}
	if t.IDP != nil {
		ext, err := t.IDP.Extension()
		if err != nil {
			return nil, fmt.Errorf("sign CRL: %w", err)
		}
		rl.ExtraExtensions = []pkix.Extension{ext}
	}
	resp, err := gen.CreateCRL(&apiv1.CreateCRLRequest{RevocationList: rl})
	if err != nil {
		return nil, fmt.Errorf("sign CRL: %w", err)
	}
	return resp.CRL, nil
}

// ParseSerial reads a serial number written as hex (how the registry keeps
// them: big.Int.Text(16)). It accepts only positive values.
func ParseSerial(s string) (*big.Int, error) {
	n, ok := new(big.Int).SetString(s, 16)
	if !ok || n.Sign() <= 0 {
		return nil, fmt.Errorf("serial %q is not a positive hex number", s)
	}
	return n, nil
}

// SerialHex is the registry's form of a certificate serial number.
func SerialHex(n *big.Int) string { return n.Text(16) }
