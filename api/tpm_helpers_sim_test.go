//go:build tpmsimulator

package api_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"testing"

	"devpki/api/client"
	"devpki/api/client/tpmenroll"
	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/tpm"
	"devpki/pkg/tpm/verify"
	"devpki/pkg/tpm/verify/ektest"
)

// simAK is the AK every simulator device attests with.
const simAK = "ak1"

// newSimFixture is newFixtureTPM trusting the EK certificates of a fresh
// test manufacturer, which it returns, and an anonymous client of it.
func newSimFixture(t *testing.T) (*fixture, *ektest.Manufacturer, *client.Client) {
	t.Helper()
	m := ektest.New(t)
	f := newFixtureTPM(t, &provision.TPMConfig{
		EKRoots: m.Roots(), EKIntermediates: m.Intermediates(), Challenger: verify.NewChallenger(verify.Config{}),
	})
	c, err := client.New(f.url, client.WithRoots(f.ca.Roots()))
	if err != nil {
		t.Fatal(err)
	}
	return f, m, c
}

// simDevice is a simulator TPM as a device presents it over HTTP: its EK
// certified by a test manufacturer, its AK simAK (made on first claim), and
// a count of the keys it made.
type simDevice struct {
	tp     *tpm.TPM
	ekPub  crypto.PublicKey
	ekCert []byte
	ekHash string
	keys   int
}

// openSimDevice opens the in-process simulator with seed (one at a time per
// process), closed when the test ends, its EK certified by m.
func openSimDevice(t *testing.T, seed string, m *ektest.Manufacturer) *simDevice {
	t.Helper()
	ctx := context.Background()
	tp, err := tpm.Open(ctx, "simulator:"+seed, tpm.Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	ek, err := tp.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h, err := verify.EKHash(ek.Public)
	if err != nil {
		t.Fatal(err)
	}
	return &simDevice{tp: tp, ekPub: ek.Public, ekCert: m.EKCert(t, ek.Public), ekHash: h}
}

// claim is the device's challenge request for serial (tpmenroll.Claim),
// presenting the manufacturer's EK certificate.
func (d *simDevice) claim(t *testing.T, serial string) *wire.TPMChallengeRequest {
	t.Helper()
	req, err := tpmenroll.Claim(context.Background(), d.tp, simAK, serial, []string{macFor(serial)})
	if err != nil {
		t.Fatal(err)
	}
	req.EKCert, req.EKPub = d.ekCert, nil
	return req
}

// answer answers ch for serial with a new TPM key (tpmenroll.Answer); a
// test may tamper with the Request before it sends it.
func (d *simDevice) answer(t *testing.T, ch *wire.TPMChallengeResponse, serial string) *tpmenroll.Answered {
	t.Helper()
	d.keys++
	a, err := tpmenroll.Answer(context.Background(), d.tp, simAK, fmt.Sprintf("key%d", d.keys), ch, serial, []string{macFor(serial)})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// certifiedKey makes a new TPM key certified by the AK over extra, and a
// CSR for serial signed with it, as a re-keying device sends them.
func (d *simDevice) certifiedKey(t *testing.T, extra []byte, serial string) (*tpm.Key, *wire.TPMCertificationParameters, string) {
	t.Helper()
	ctx := context.Background()
	d.keys++
	key, err := d.tp.AttestedKey(ctx, simAK, fmt.Sprintf("key%d", d.keys), extra)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := key.CertificationParameters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := key.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	der, err := pki.NewDeviceCSR(signer, serial, []string{macFor(serial)})
	if err != nil {
		t.Fatal(err)
	}
	return key, &wire.TPMCertificationParameters{Public: cp.Public, CreateData: cp.CreateData,
			CreateAttestation: cp.CreateAttestation, CreateSignature: cp.CreateSignature},
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// leafOf parses the one certificate of a PEM leaf, as in EnrollResponse.
func leafOf(t *testing.T, certPEM string) *x509.Certificate {
	t.Helper()
	certs, err := client.ParseCertificatesPEM([]byte(certPEM))
	if err != nil || len(certs) != 1 {
		t.Fatalf("leaf certificate: %d certificates, %v", len(certs), err)
	}
	return certs[0]
}
