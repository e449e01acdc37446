package pki_test

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"testing"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
)

// TestParseIDevIDHardwareModuleName reads the hwType and serial of the
// hardwareModuleName and leaves the certificate it was given untouched.
func TestParseIDevIDHardwareModuleName(t *testing.T) {
	m := pkitest.NewManufacturer(t, "Parse")
	c, _ := m.IssueIDevID(t, pkitest.IDevIDSpec{HWSerial: "HW-42"})
	id, err := pki.ParseIDevID(c)
	if err != nil || id.Serial != "HW-42" || !id.HWType.Equal(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}) ||
		id.CertSerial != c.SerialNumber.Text(16) || id.Issuer != c.Issuer.String() {
		t.Fatalf("ParseIDevID = %+v, %v", id, err)
	}
	if len(c.UnhandledCriticalExtensions) != 1 {
		t.Fatal("ParseIDevID changed its argument")
	}
	broken := *c
	broken.Extensions = append([]pkix.Extension(nil), c.Extensions...)
	for i := range broken.Extensions {
		if broken.Extensions[i].Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
			broken.Extensions[i].Value = []byte{0x30, 0x03, 0xa0, 0x01, 0x00}
		}
	}
	if _, err := pki.ParseIDevID(&broken); !errors.Is(err, pki.ErrBadIDevID) {
		t.Fatalf("malformed SAN: %v, want ErrIDevIDInvalid", err)
	}
}

// TestParseIDevIDSerials: the subject serialNumber alone, both forms
// agreeing, and the refusals (none, two that differ, a hostile one).
func TestParseIDevIDSerials(t *testing.T) {
	m := pkitest.NewManufacturer(t, "Serials")
	for _, tc := range []struct {
		name string
		spec pkitest.IDevIDSpec
		want string
	}{
		{"subject serialNumber", pkitest.IDevIDSpec{SubjectSerial: "SUBJ-1"}, "SUBJ-1"},
		{"both, agreeing", pkitest.IDevIDSpec{SubjectSerial: "both-1", HWSerial: "BOTH-1"}, "BOTH-1"},
		{"none", pkitest.IDevIDSpec{}, ""},
		{"two that differ", pkitest.IDevIDSpec{SubjectSerial: "A", HWSerial: "B"}, ""},
		{"hostile", pkitest.IDevIDSpec{HWSerial: "a/b"}, ""},
	} {
		c, _ := m.IssueIDevID(t, tc.spec)
		id, err := pki.ParseIDevID(c)
		switch {
		case tc.want == "" && !errors.Is(err, pki.ErrBadIDevID):
			t.Errorf("%s: %+v, %v; want ErrBadIDevID", tc.name, id, err)
		case tc.want != "" && (err != nil || id.Serial != tc.want):
			t.Errorf("%s: %+v, %v; want serial %s", tc.name, id, err, tc.want)
		}
	}
}
