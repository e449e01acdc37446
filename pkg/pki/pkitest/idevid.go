package pkitest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"devpki/pkg/pki"
)

// Manufacturer is a device maker's CA for tests of factory IDevID
// enrollment (IEEE 802.1AR): a root and an intermediate that issues
// IDevIDs.
type Manufacturer struct {
	Root, Intermediate       *x509.Certificate
	rootKey, intermediateKey crypto.Signer
}

// NewManufacturer makes a manufacturer CA named name (root and
// intermediate, P-256).
func NewManufacturer(t testing.TB, name string) *Manufacturer {
	t.Helper()
	m := &Manufacturer{rootKey: newKey(t), intermediateKey: newKey(t)}
	now := time.Now()
	root := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: name + " Root CA", Organization: []string{name}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(20 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}
	m.Root = create(t, root, root, m.rootKey.Public(), m.rootKey)
	inter := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: name + " IDevID CA", Organization: []string{name}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(20 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	m.Intermediate = create(t, inter, m.Root, m.intermediateKey.Public(), m.rootKey)
	return m
}

// PEM is the root and the intermediate as a PEM bundle (what 'ca idevid
// roots add' reads).
func (m *Manufacturer) PEM() []byte {
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.Root.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.Intermediate.Raw})...)
}

// IDevIDSpec shapes an IDevID. The zero value is a leaf with no serial,
// valid from an hour ago until 99991231235959Z, keyUsage digitalSignature.
type IDevIDSpec struct {
	// SubjectSerial is the subject's serialNumber; empty for none.
	SubjectSerial string
	// HWSerial, when set, is put in a critical subjectAltName holding
	// only a hardwareModuleName otherName (RFC 4108).
	HWSerial string
	// ExtraOtherName adds an otherName of an unknown type to that
	// subjectAltName.
	ExtraOtherName bool
	// NotBefore and NotAfter: zero means an hour ago and 9999-12-31.
	NotBefore, NotAfter time.Time
	KeyUsage            x509.KeyUsage // zero means digitalSignature
	ExtKeyUsage         []x509.ExtKeyUsage
	IsCA                bool
}

// IssueIDevID issues an IDevID as spec says, signed by the intermediate,
// with a fresh P-256 key.
func (m *Manufacturer) IssueIDevID(t testing.TB, spec IDevIDSpec) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: "IDevID", SerialNumber: spec.SubjectSerial},
		NotBefore: spec.NotBefore, NotAfter: spec.NotAfter, KeyUsage: spec.KeyUsage, ExtKeyUsage: spec.ExtKeyUsage,
	}
	if spec.IsCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
	}
	if tmpl.KeyUsage == 0 {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	if spec.HWSerial != "" {
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, HardwareModuleNameSAN(t, asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1},
			[]byte(spec.HWSerial), spec.ExtraOtherName))
	}
	return create(t, tmpl, m.Intermediate, key.Public(), m.intermediateKey), key
}

// TLSCertificate is an IDevID with its key as a TLS client certificate;
// withChain sends the intermediate too.
func (m *Manufacturer) TLSCertificate(cert *x509.Certificate, key crypto.Signer, withChain bool) tls.Certificate {
	c := tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
	if withChain {
		c.Certificate = append(c.Certificate, m.Intermediate.Raw)
	}
	return c
}

// HardwareModuleNameSAN is a critical subjectAltName extension holding a
// hardwareModuleName otherName (and, with extra, one otherName of an
// unknown type).
func HardwareModuleNameSAN(t testing.TB, hwType asn1.ObjectIdentifier, hwSerial []byte, extra bool) pkix.Extension {
	t.Helper()
	type hardwareModuleName struct {
		Type   asn1.ObjectIdentifier
		Serial []byte
	}
	type otherName struct {
		TypeID asn1.ObjectIdentifier
		Value  asn1.RawValue // [0] EXPLICIT, built by hand: asn1 ignores params on a RawValue with FullBytes
	}
	inner, err := asn1.Marshal(hardwareModuleName{hwType, hwSerial})
	if err != nil {
		t.Fatal(err)
	}
	names := []asn1.RawValue{}
	add := func(typeID asn1.ObjectIdentifier, value []byte) {
		on, err := asn1.Marshal(otherName{TypeID: typeID,
			Value: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: value}})
		if err != nil {
			t.Fatal(err)
		}
		// [0] IMPLICIT OtherName: the SEQUENCE's tag replaced.
		var raw asn1.RawValue
		if _, err := asn1.Unmarshal(on, &raw); err != nil {
			t.Fatal(err)
		}
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: raw.Bytes})
	}
	add(pki.OIDHardwareModuleName, inner)
	if extra {
		utf8, _ := asn1.MarshalWithParams("other", "utf8")
		add(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 2}, utf8)
	}
	der, err := asn1.Marshal(names)
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Critical: true, Value: der}
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	return n.Add(n, big.NewInt(1))
}

func create(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatalf("pkitest: create certificate %s: %v", tmpl.Subject, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
