package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// A CRL of a million entries through x509.CreateRevocationList spends most
// of its time in encoding/asn1's reflection over []pkix.RevokedCertificate
// and most of its memory in the big.Ints and intermediate encoders. Here
// the revokedCertificates list is encoded entry by entry with cryptobyte
// as the entries are read (CRLEntries), and spliced into the tbsCertList
// that x509.CreateRevocationList itself encodes for the same template
// without entries (crlSkeleton): everything else in the CRL — version,
// signature algorithm, issuer, times, AKI, CRL number, IDP — is the
// library's encoding, byte for byte.

// ErrBadCertSerial is wrapped by CRLEntries for a certificate serial that is not a
// positive number (or, from hex, not hex).
var ErrBadCertSerial = errors.New("serial must be a positive number")

// crlEntryBytes is what one entry takes: a 20-byte serial (21 with its
// sign byte), a UTCTime and a reason code extension.
const crlEntryBytes = 56

// maxSerialBytes bounds a serial read from hex (RFC 5280 allows 20 octets;
// the registry never holds more).
const maxSerialBytes = 64

// CRLEntries is a CRL's revokedCertificates list, DER-encoded as entries
// are added: what SignCRL needs of a million revoked certificates is this
// buffer (~55 bytes an entry), not a slice of structs with big.Ints. It is
// spent by SignCRL (the CRL is built in its buffer) and must not be
// reused after.
type CRLEntries struct {
	der []byte // concatenated RevokedCertificate SEQUENCEs
	n   int
}

// NewCRLEntries returns an empty list with room for about n entries.
func NewCRLEntries(n int) *CRLEntries {
	return &CRLEntries{der: make([]byte, 0, max(0, n)*crlEntryBytes)}
}

// Len is the number of entries added.
func (e *CRLEntries) Len() int { return e.n }

// Add appends an entry: the certificate serial, when it was revoked and
// the RFC 5280 CRLReason (0, unspecified, leaves the reasonCode extension
// out, as RFC 5280 and x509.CreateRevocationList do).
func (e *CRLEntries) Add(serial *big.Int, at time.Time, reason int) error {
	if serial == nil || serial.Sign() <= 0 {
		return fmt.Errorf("CRL entry: %w", ErrBadCertSerial)
	}
	if at.IsZero() {
		return errors.New("CRL entry: zero revocation time")
	}
	return e.add(serial.Bytes(), at.UTC(), reason)
}

// AddHex is Add for a serial as the registry keeps it (hex, see SerialHex)
// and a revocation time in Unix seconds (a CRL holds whole seconds): a
// million of them are added without a big.Int or a time parse each. The
// serial is only read during the call.
func (e *CRLEntries) AddHex(serial []byte, at int64, reason int) error {
	var buf [maxSerialBytes]byte
	mag, err := hexSerial(buf[:], serial)
	if err != nil {
		return err
	}
	return e.add(mag, time.Unix(at, 0).UTC(), reason)
}

// hexSerial decodes a positive hex serial into buf, without leading zero
// bytes.
func hexSerial(buf []byte, s []byte) ([]byte, error) {
	for len(s) > 0 && s[0] == '0' {
		s = s[1:]
	}
	if len(s) == 0 || (len(s)+1)/2 > len(buf) {
		return nil, fmt.Errorf("CRL entry: serial %q: %w", s, ErrBadCertSerial)
	}
	out := buf[:(len(s)+1)/2]
	i := 0
	if len(s)%2 == 1 { // an odd count: the first byte is one digit
		lo, ok := unhex(s[0])
		if !ok {
			return nil, fmt.Errorf("CRL entry: serial %q is not hex: %w", s, ErrBadCertSerial)
		}
		out[0] = lo
		s, i = s[1:], 1
	}
	for ; len(s) > 0; s, i = s[2:], i+1 {
		hi, ok1 := unhex(s[0])
		lo, ok2 := unhex(s[1])
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("CRL entry: serial %q is not hex: %w", s, ErrBadCertSerial)
		}
		out[i] = hi<<4 | lo
	}
	return out, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// add encodes RevokedCertificate ::= SEQUENCE { userCertificate
// CertificateSerialNumber, revocationDate Time, crlEntryExtensions
// Extensions OPTIONAL } for a positive serial given by its magnitude.
//
// By hand rather than with a cryptobyte.Builder: a Builder allocates a
// child for every nested element, ~350 bytes of garbage an entry (six
// times the entry) that a million-entry build made the GC chase. The
// shape is fixed and small: a serial of at most maxSerialBytes, a time of
// 15 bytes and a reason extension of a few make every length fit DER's
// one-byte short form (under 128), which add checks.
func (e *CRLEntries) add(mag []byte, at time.Time, reason int) error {
	ext, err := reasonExtension(reason)
	if err != nil {
		return err
	}
	var tbuf [15]byte
	tag, tm, err := crlTime(tbuf[:0], at)
	if err != nil {
		return err
	}
	intLen := len(mag)
	if mag[0]&0x80 != 0 {
		intLen++ // positive: DER's sign byte
	}
	n := 2 + intLen + 2 + len(tm)
	if ext != nil {
		n += 2 + len(ext)
	}
	if n >= 0x80 || len(ext) >= 0x80 {
		return fmt.Errorf("CRL entry: %d bytes do not fit a short-form length", n)
	}
	d := append(e.der, 0x30, byte(n), 0x02, byte(intLen))
	if intLen > len(mag) {
		d = append(d, 0)
	}
	d = append(d, mag...)
	d = append(d, byte(tag), byte(len(tm)))
	d = append(d, tm...)
	if ext != nil {
		d = append(d, 0x30, byte(len(ext)))
		d = append(d, ext...)
	}
	e.der = d
	e.n++
	return nil
}

// crlTime encodes t as encoding/asn1 encodes a time.Time (what
// x509.CreateRevocationList writes): UTCTime from 1950 to 2049,
// GeneralizedTime otherwise, whole seconds, "Z".
func crlTime(dst []byte, t time.Time) (cbasn1.Tag, []byte, error) {
	y, mo, d := t.Date()
	h, mi, s := t.Clock()
	tag := cbasn1.UTCTime
	switch {
	case y >= 1950 && y < 2050:
		dst = append2(dst, y%100)
	case y >= 0 && y <= 9999:
		tag = cbasn1.GeneralizedTime
		dst = append2(append2(dst, y/100), y%100)
	default:
		return 0, nil, fmt.Errorf("CRL entry: revocation time %v cannot be encoded", t)
	}
	dst = append2(append2(append2(append2(append2(dst, int(mo)), d), h), mi), s)
	return tag, append(dst, 'Z'), nil
}

func append2(dst []byte, v int) []byte { return append(dst, byte('0'+v/10), byte('0'+v%10)) }

// oidReasonCode is id-ce-cRLReasons.
var oidReasonCode = asn1.ObjectIdentifier{2, 5, 29, 21}

// reasonExts are the encoded reasonCode extensions of RFC 5280's reasons
// (index: the reason), made with encoding/asn1 as x509 makes them.
var reasonExts = func() [11][]byte {
	var out [11][]byte
	for r := 1; r < len(out); r++ {
		ext, err := marshalReason(r)
		if err != nil {
			panic(err)
		}
		out[r] = ext
	}
	return out
}()

func marshalReason(reason int) ([]byte, error) {
	v, err := asn1.Marshal(asn1.Enumerated(reason))
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(pkix.Extension{Id: oidReasonCode, Value: v})
}

// reasonExtension is the entry's reasonCode extension, nil for 0.
func reasonExtension(reason int) ([]byte, error) {
	if reason >= 0 && reason < len(reasonExts) {
		return reasonExts[reason], nil
	}
	ext, err := marshalReason(reason)
	if err != nil {
		return nil, fmt.Errorf("CRL entry: reason %d: %w", reason, err)
	}
	return ext, nil
}

// errTBSCaptured stops x509.CreateRevocationList once it has encoded the
// tbsCertList: tbsCapture only wants that.
var errTBSCaptured = errors.New("tbsCertList captured")

// tbsCapture is a crypto.MessageSigner that records the message it is
// asked to sign (x509 hands a MessageSigner the tbsCertList itself) and
// the options x509 chose for the key, and signs nothing.
type tbsCapture struct {
	pub  crypto.PublicKey
	tbs  []byte
	opts crypto.SignerOpts
}

func (c *tbsCapture) Public() crypto.PublicKey { return c.pub }

func (c *tbsCapture) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("tbsCapture: x509 signed a digest; it must hand a MessageSigner the message")
}

func (c *tbsCapture) SignMessage(_ io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	c.tbs, c.opts = msg, opts
	return nil, errTBSCaptured
}

// crlSkeleton is the tbsCertList x509.CreateRevocationList encodes for rl
// (which has no entries), issued by issuer with a key whose public half is
// pub, cut where the revokedCertificates go: head is everything up to
// nextUpdate, exts the [0] crlExtensions, algID the signature
// AlgorithmIdentifier, opts the signer options x509 uses for the key.
type crlSkeleton struct {
	head, exts, algID []byte
	opts              crypto.SignerOpts
}

func newCRLSkeleton(rl *x509.RevocationList, issuer *x509.Certificate, pub crypto.PublicKey) (*crlSkeleton, error) {
	//lint:ignore SA1019 only checked for emptiness: entries are spliced in, never given to x509
	if len(rl.RevokedCertificateEntries) > 0 || len(rl.RevokedCertificates) > 0 {
		return nil, errors.New("CRL skeleton: the template must have no entries")
	}
	c := &tbsCapture{pub: pub}
	if _, err := x509.CreateRevocationList(rand.Reader, rl, issuer, c); !errors.Is(err, errTBSCaptured) {
		if err == nil {
			err = errors.New("x509 did not ask to sign")
		}
		return nil, err
	}
	in := cryptobyte.String(c.tbs)
	var body cryptobyte.String
	if !in.ReadASN1(&body, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, errors.New("CRL skeleton: tbsCertList is not a SEQUENCE")
	}
	// version, signature, issuer, thisUpdate, nextUpdate
	want := []cbasn1.Tag{cbasn1.INTEGER, cbasn1.SEQUENCE, cbasn1.SEQUENCE, 0, 0}
	all := body
	var algID cryptobyte.String
	for i, w := range want {
		var el cryptobyte.String
		var tag cbasn1.Tag
		if !body.ReadAnyASN1Element(&el, &tag) || (w != 0 && tag != w) ||
			(w == 0 && tag != cbasn1.UTCTime && tag != cbasn1.GeneralizedTime) {
			return nil, fmt.Errorf("CRL skeleton: tbsCertList element %d is not what x509 writes", i)
		}
		if i == 1 {
			algID = el
		}
	}
	head := all[:len(all)-len(body)]
	var exts cryptobyte.String
	if !body.ReadASN1Element(&exts, cbasn1.Tag(0).ContextSpecific().Constructed()) || !body.Empty() {
		return nil, errors.New("CRL skeleton: tbsCertList does not end with its extensions")
	}
	return &crlSkeleton{head: head, exts: exts, algID: algID, opts: c.opts}, nil
}

// derHeader is the identifier and definite length octets of a DER element
// with n content bytes.
func derHeader(tag byte, n int) []byte {
	if n < 0x80 {
		return []byte{tag, byte(n)}
	}
	var l []byte
	for v := n; v > 0; v >>= 8 {
		l = append([]byte{byte(v)}, l...)
	}
	return append([]byte{tag, 0x80 | byte(len(l))}, l...)
}

// crlSlack is what the CRL adds after the tbsCertList: the algorithm
// identifier, the BIT STRING header and the signature (RSA-8192 at most),
// reserved so the entries' buffer holds the whole CRL.
const crlSlack = 64 + 128 + 1024

// sign builds the CRL in e's buffer — tbsCertList (the skeleton with the
// entries spliced in), signed by signer as x509 signs it — and returns
// it. The entries are moved, not copied: e is spent.
func (s *crlSkeleton) sign(e *CRLEntries, signer crypto.Signer) ([]byte, error) {
	var revHdr []byte
	if e.n > 0 { // no entries: the list is left out, as x509 does
		revHdr = derHeader(0x30, len(e.der))
	}
	tbsLen := len(s.head) + len(revHdr) + len(e.der) + len(s.exts)
	prefix := slices.Concat(derHeader(0x30, tbsLen), s.head, revHdr)
	buf := slices.Grow(e.der, len(prefix)+len(s.exts)+crlSlack)
	e.der, e.n = nil, 0
	buf = slices.Insert(buf, 0, prefix...)
	buf = append(buf, s.exts...)
	sig, err := signTBS(buf, signer, s.opts)
	if err != nil {
		return nil, err
	}
	// CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm,
	// signatureValue BIT STRING }
	bits := derHeader(0x03, len(sig)+1)
	outer := derHeader(0x30, len(buf)+len(s.algID)+len(bits)+1+len(sig))
	buf = slices.Insert(buf, 0, outer...)
	buf = append(buf, s.algID...)
	buf = append(append(append(buf, bits...), 0), sig...)
	return buf, nil
}

// signTBS signs tbs as x509's signTBS does (crypto.SignMessage with the
// options x509 chose) and, as it does, checks the signature before it is
// published: a faulty signer (an HSM) must not produce a CRL no relying
// party accepts.
func signTBS(tbs []byte, signer crypto.Signer, opts crypto.SignerOpts) ([]byte, error) {
	h := opts.HashFunc()
	var digest []byte
	if h != 0 {
		if !h.Available() {
			return nil, fmt.Errorf("sign CRL: hash %v is not available", h)
		}
		d := h.New()
		d.Write(tbs)
		digest = d.Sum(nil)
	}
	var sig []byte
	var err error
	if _, ok := signer.(crypto.MessageSigner); ok || h == 0 {
		sig, err = crypto.SignMessage(signer, rand.Reader, tbs, opts)
	} else {
		sig, err = signer.Sign(rand.Reader, digest, opts) // what crypto.SignMessage does, the digest kept
	}
	if err != nil {
		return nil, fmt.Errorf("sign CRL: %w", err)
	}
	ok := false
	switch pub := signer.Public().(type) {
	case *ecdsa.PublicKey:
		ok = digest != nil && ecdsa.VerifyASN1(pub, digest, sig)
	case *rsa.PublicKey:
		if pss, isPSS := opts.(*rsa.PSSOptions); isPSS {
			ok = digest != nil && rsa.VerifyPSS(pub, h, digest, sig, pss) == nil
		} else {
			ok = digest != nil && rsa.VerifyPKCS1v15(pub, h, digest, sig) == nil
		}
	case ed25519.PublicKey:
		ok = ed25519.Verify(pub, tbs, sig)
	default:
		return nil, fmt.Errorf("sign CRL: unsupported public key %T", pub)
	}
	if !ok {
		return nil, errors.New("sign CRL: the signature returned by the signer does not verify")
	}
	return sig, nil
}
