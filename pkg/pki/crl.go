package pki

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"
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
	// Entries, instead of Revoked, are the entries already encoded (a
	// large CRL streamed from the registry). SignCRL spends them.
	Entries *CRLEntries
	// IDP, when it has a URI, makes this a partition CRL: it carries IDP as
	// its critical issuing distribution point (RFC 5280 §5.2.5). Nil: a
	// full CRL.
	IDP *IDP
}

// SignCRL builds an RFC 5280 v2 CRL from t and signs it with the issuing
// intermediate's key. The CRL carries the intermediate's subject as issuer
// and its subject key id as authority key identifier. It returns the DER.
//
// It does not go through the CAS's CreateCRL (softcas: x509.CreateRevocationList
// with the same intermediate and the same Signer): a million entries
// through encoding/asn1's reflection took 9 s of CPU and hundreds of MB.
// x509.CreateRevocationList still encodes everything but the entries (see
// crlSkeleton); the entries are encoded by CRLEntries, and the result is
// signed with ca.Signer — the key softcas holds, a file key or a PKCS#11
// token's — as x509 signs it.
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
	case t.Entries != nil && len(t.Revoked) > 0:
		return nil, errors.New("sign CRL: both Revoked and Entries are set")
	case ca.Signer == nil || ca.Intermediate == nil:
		return nil, errors.New("sign CRL: the CA has no issuing certificate and key")
	}
	entries := t.Entries
	if entries == nil {
		entries = NewCRLEntries(len(t.Revoked))
		for i, r := range t.Revoked {
			if err := entries.Add(r.Serial, r.RevokedAt, r.Reason); err != nil {
				return nil, fmt.Errorf("sign CRL: entry %d: %w", i, err)
			}
		}
	}
	rl := &x509.RevocationList{
		Number:     big.NewInt(t.Number),
		ThisUpdate: t.ThisUpdate.UTC(),
		NextUpdate: t.NextUpdate.UTC(),
	}
	if t.IDP != nil {
		ext, err := t.IDP.Extension()
		if err != nil {
			return nil, fmt.Errorf("sign CRL: %w", err)
		}
		rl.ExtraExtensions = []pkix.Extension{ext}
	}
	skel, err := newCRLSkeleton(rl, ca.Intermediate, ca.Signer.Public())
	if err != nil {
		return nil, fmt.Errorf("sign CRL: %w", err)
	}
	return skel.sign(entries, ca.Signer)
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
