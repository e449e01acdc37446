package e2e

import (
	"path/filepath"
	"testing"

	"devpki/pkg/pki/pkitest/zlinttest"
)

// TestSPIFFEProfileEndToEnd: enrollment.profile: spiffe in ca.yaml makes
// `ca serve` issue device certificates whose only URI SAN is the SPIFFE ID
// (X.509-SVID compatible), with no urn:dev:mac URIs.
func TestSPIFFEProfileEndToEnd(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	ca.editConfig(t, "profile: default", "profile: spiffe")
	srv := ca.serve(t)
	tok := ca.mintToken(t, srv)
	const serial = "E2E-SVID-0001"
	state := filepath.Join(t.TempDir(), "state")
	ca.enrollOK(t, srv, tok.Token, state, serial)

	cert := readCert(t, filepath.Join(state, "device.crt"))
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "spiffe://devpki.local/default/device/"+serial {
		t.Fatalf("URI SANs %v, want exactly [spiffe://devpki.local/default/device/%s]", cert.URIs, serial)
	}
	if len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.EmailAddresses) != 0 {
		t.Errorf("other SANs: %v %v %v", cert.DNSNames, cert.IPAddresses, cert.EmailAddresses)
	}
	zlinttest.Certificate(t, "spiffe profile device.crt", cert.Raw, zlintAllow(cert))
}
