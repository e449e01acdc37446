package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/smallstep/certificates/cas/apiv1"
	"golang.org/x/crypto/ocsp"
)

// DefaultOCSPResponderLifetime is the lifetime of the delegated OCSP
// responder certificate; it is re-issued when half of it has passed.
const DefaultOCSPResponderLifetime = 7 * 24 * time.Hour

// OIDOCSPNoCheck is id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1): clients need
// not check the responder certificate's own revocation status.
var OIDOCSPNoCheck = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}

// asn1Null is the DER of an ASN.1 NULL, the value of the nocheck extension.
var asn1Null = []byte{0x05, 0x00}

// OCSPResponderOptions configures NewOCSPResponder. CA is required.
type OCSPResponderOptions struct {
	CA *CA
	// Lifetime of each responder certificate; 0 means
	// DefaultOCSPResponderLifetime. A new key and certificate replace the
	// current ones once half of it has passed.
	Lifetime time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Issued, when set, is called with every new responder certificate
	// before it signs anything (to record it in the registry); an error
	// keeps the previous certificate in use.
	Issued func(ctx context.Context, cert *x509.Certificate) error
}

// OCSPResponder signs OCSP responses with a delegated responder certificate
// that the intermediate issues (EKU id-kp-OCSPSigning, id-pkix-ocsp-nocheck)
// for a key made in memory. It is safe for concurrent use.
type OCSPResponder struct {
	ca       *CA
	lifetime time.Duration
	now      func() time.Time
	issued   func(context.Context, *x509.Certificate) error

	mu  sync.Mutex // serializes rotation
	cur atomic.Pointer[ocspKey]

	issuerKey []byte // the intermediate's subjectPublicKey BIT STRING contents
}

type ocspKey struct {
	cert     *x509.Certificate
	key      crypto.Signer
	rotateAt time.Time
}

// NewOCSPResponder issues the first responder certificate.
func NewOCSPResponder(ctx context.Context, opts OCSPResponderOptions) (*OCSPResponder, error) {
	if opts.CA == nil || opts.CA.CAS == nil || opts.CA.Intermediate == nil {
		return nil, errors.New("new OCSP responder: CA is required")
	}
	r := &OCSPResponder{ca: opts.CA, lifetime: opts.Lifetime, now: opts.Now, issued: opts.Issued}
	if r.lifetime == 0 {
		r.lifetime = DefaultOCSPResponderLifetime
	}
	if r.lifetime < time.Hour {
		return nil, fmt.Errorf("new OCSP responder: lifetime %v is shorter than 1h", r.lifetime)
	}
	if r.now == nil {
		r.now = time.Now
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(opts.CA.Intermediate.RawSubjectPublicKeyInfo, &spki); err != nil {
		return nil, fmt.Errorf("new OCSP responder: intermediate public key: %w", err)
	}
	r.issuerKey = spki.PublicKey.RightAlign()
	if err := r.Rotate(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Certificate returns the responder certificate in use.
func (r *OCSPResponder) Certificate() *x509.Certificate { return r.cur.Load().cert }

// Rotate makes a new key and responder certificate and switches to them.
func (r *OCSPResponder) Rotate(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rotateLocked(ctx)
}

func (r *OCSPResponder) rotateLocked(ctx context.Context) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("OCSP responder: key: %w", err)
	}
	sn, err := newSerial(rand.Reader)
	if err != nil {
		return fmt.Errorf("OCSP responder: %w", err)
	}
	now := r.now()
	notAfter := now.Add(r.lifetime)
	if ia := r.ca.Intermediate.NotAfter; notAfter.After(ia) {
		notAfter = ia
	}
	if !notAfter.After(now) {
		return fmt.Errorf("OCSP responder: intermediate CA expired at %v", r.ca.Intermediate.NotAfter)
	}
	// "<intermediate CN> OCSP Responder", unless that is longer than RFC
	// 5280 allows a CN (an intermediate loaded from elsewhere may have a
	// CN of up to 64 characters): then the organization alone names it.
	cn := r.ca.Intermediate.Subject.CommonName + " OCSP Responder"
	if utf8.RuneCountInString(cn) > MaxSubjectValueLen {
		cn = "OCSP Responder"
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: cn, Organization: r.ca.Intermediate.Subject.Organization},
		NotBefore:             now.Add(-DefaultBackdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning},
		AuthorityKeyId:        r.ca.Intermediate.SubjectKeyId,
		ExtraExtensions:       []pkix.Extension{{Id: OIDOCSPNoCheck, Value: asn1Null}},
		PublicKey:             key.Public(),
		BasicConstraintsValid: true,
	}
	resp, err := r.ca.CAS.CreateCertificate(&apiv1.CreateCertificateRequest{
		Template: tmpl, Lifetime: notAfter.Sub(now), Backdate: DefaultBackdate,
	})
	if err != nil {
		return fmt.Errorf("OCSP responder: issue certificate: %w", err)
	}
	if r.issued != nil {
		if err := r.issued(ctx, resp.Certificate); err != nil {
			return fmt.Errorf("OCSP responder: record certificate: %w", err)
		}
	}
	r.cur.Store(&ocspKey{cert: resp.Certificate, key: key, rotateAt: now.Add(notAfter.Sub(now) / 2)})
	return nil
}

// current returns the key in use, rotating first when it is due. A failed
// rotation keeps the current key while it is still valid.
func (r *OCSPResponder) current(ctx context.Context) (*ocspKey, error) {
	k := r.cur.Load()
	now := r.now()
	if now.Before(k.rotateAt) {
		return k, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if k = r.cur.Load(); now.Before(k.rotateAt) {
		return k, nil
	}
	if err := r.rotateLocked(ctx); err != nil {
		if now.Before(k.cert.NotAfter) {
			return k, nil
		}
		return nil, err
	}
	return r.cur.Load(), nil
}

// MatchesIssuer reports whether req names this CA's intermediate as the
// issuer: IssuerNameHash and IssuerKeyHash computed with the request's hash.
func (r *OCSPResponder) MatchesIssuer(req *ocsp.Request) bool {
	h := req.HashAlgorithm
	if !h.Available() {
		return false
	}
	nh := h.New()
	nh.Write(r.ca.Intermediate.RawSubject)
	kh := h.New()
	kh.Write(r.issuerKey)
	return bytes.Equal(nh.Sum(nil), req.IssuerNameHash) && bytes.Equal(kh.Sum(nil), req.IssuerKeyHash)
}

// OCSPStatus is what one response says about one certificate.
type OCSPStatus struct {
	Serial *big.Int
	// Status is ocsp.Good, ocsp.Revoked or ocsp.Unknown.
	Status     int
	RevokedAt  time.Time // when Revoked
	Reason     int       // RFC 5280 CRLReason, when Revoked
	ThisUpdate time.Time
	NextUpdate time.Time
	// Hash is the CertID hash of the request (the response echoes it);
	// 0 means SHA-1.
	Hash crypto.Hash
}

// Sign returns the DER of a signed OCSP response for st, with the responder
// certificate included, rotating the responder key first when it is due.
func (r *OCSPResponder) Sign(ctx context.Context, st *OCSPStatus) ([]byte, error) {
	k, err := r.current(ctx)
	if err != nil {
		return nil, err
	}
	tmpl := ocsp.Response{
		Status:       st.Status,
		SerialNumber: st.Serial,
		ThisUpdate:   st.ThisUpdate.UTC(),
		NextUpdate:   st.NextUpdate.UTC(),
		Certificate:  k.cert,
		IssuerHash:   st.Hash,
	}
	if tmpl.IssuerHash == 0 {
		tmpl.IssuerHash = crypto.SHA1
	}
	if st.Status == ocsp.Revoked {
		tmpl.RevokedAt = st.RevokedAt.UTC()
		tmpl.RevocationReason = st.Reason
	}
	der, err := ocsp.CreateResponse(r.ca.Intermediate, k.cert, tmpl, k.key)
	if err != nil {
		return nil, fmt.Errorf("sign OCSP response: %w", err)
	}
	return der, nil
}
