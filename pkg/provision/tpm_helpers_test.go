//go:build tpmsimulator || swtpm

package provision_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"testing"

	"github.com/smallstep/go-attestation/attest"

	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/tpm"
	"devpki/pkg/tpm/verify"
)

// simDevice is a TPM (simulator or swtpm) with its EK certificate.
type simDevice struct {
	tp     *tpm.TPM
	ekCert []byte
	ekHash string
	ak     *tpm.AK
	keys   int
}

func (d *simDevice) challengeRequest(t *testing.T, serial string, macs ...string) *provision.TPMChallengeRequest {
	t.Helper()
	params, err := d.ak.AttestationParameters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return &provision.TPMChallengeRequest{EKCertDER: d.ekCert, AK: params, Serial: serial, MACs: macs, SourceAddr: "192.0.2.7"}
}

// answer activates the credential, makes an attested key bound to the nonce
// and a CSR for serial and macs with it.
func (d *simDevice) answer(t *testing.T, ch *provision.TPMChallenge, serial string, macs ...string) *provision.Request {
	t.Helper()
	ctx := context.Background()
	secret, err := d.ak.ActivateCredential(ctx, ch.Credential)
	if err != nil {
		t.Fatal(err)
	}
	cp, csr := d.certifiedKey(t, "ak1", ch.Nonce, serial, macs...)
	return &provision.Request{
		TPM:        &provision.TPMAnswer{ChallengeID: ch.ID, ActivatedSecret: secret, Certify: *cp},
		SourceAddr: "192.0.2.7", CSRPEM: csr,
	}
}

// certifiedKey makes a new key in d's TPM, certified by the AK akName with
// extraData as qualifying data, and a CSR for serial and macs signed by it.
func (d *simDevice) certifiedKey(t *testing.T, akName string, extraData []byte, serial string, macs ...string) (*attest.CertificationParameters, []byte) {
	t.Helper()
	ctx := context.Background()
	d.keys++
	key, err := d.tp.AttestedKey(ctx, akName, fmt.Sprintf("key%d", d.keys), extraData)
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
	der, err := pki.NewDeviceCSR(signer, serial, macs)
	if err != nil {
		t.Fatal(err)
	}
	return &cp, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// tpmFixture is a fixture with TPM attestation enabled.
type tpmFixture struct {
	*fixture
	// tpm is the TPM door's attestor.
	tpm provision.Attestor
}

func newTPMFixture(t *testing.T, roots, intermediates *x509.CertPool) *tpmFixture {
	t.Helper()
	f := newFixture(t)
	cfg := &provision.TPMConfig{EKRoots: roots, EKIntermediates: intermediates, Challenger: verify.NewChallenger(verify.Config{})}
	svc, err := provision.New(provision.Config{Store: f.store, Issuer: f.issuer, TrustDomain: "test.devpki", TPM: cfg})
	if err != nil {
		t.Fatal(err)
	}
	f.svc = svc
	return &tpmFixture{fixture: f, tpm: tpmAttestor(f.store, cfg)}
}

// tpmAttestor is the attestor cmd/ca wires for the TPM door of cfg.
func tpmAttestor(store registry.Store, cfg *provision.TPMConfig) provision.TPMAttestor {
	return provision.TPMAttestor{Challenger: cfg.Challenger, Store: store}
}

// openDevice opens the TPM at spec and reads its EK and AK; ekCert turns the
// EK into the certificate the device presents.
func openDevice(t *testing.T, spec string, ekCert func(*tpm.EK) []byte) *simDevice {
	t.Helper()
	ctx := context.Background()
	tp, err := tpm.Open(ctx, spec, tpm.Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ek, err := tp.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := tp.EnsureAK(ctx, "ak1")
	if err != nil {
		t.Fatal(err)
	}
	h, err := verify.EKHash(ek.Public)
	if err != nil {
		t.Fatal(err)
	}
	return &simDevice{tp: tp, ekCert: ekCert(ek), ekHash: h, ak: ak}
}
