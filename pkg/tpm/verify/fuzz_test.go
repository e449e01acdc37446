package verify_test

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"testing"
	"time"

	"github.com/smallstep/go-attestation/attest"

	"devpki/pkg/tpm/verify"
	"devpki/pkg/tpm/verify/ektest"
)

// FuzzEKCertificate: any bytes offered as an EK certificate are parsed and
// verified against a manufacturer chain; a refusal wraps ErrEKUntrusted
// and nothing panics (the EK certificate's critical TPM SAN is parsed by
// hand). Seeded with a real EK certificate of a throwaway manufacturer.
// Run longer: go test -run '^$' -fuzz FuzzEKCertificate -fuzztime 10m ./pkg/tpm/verify
func FuzzEKCertificate(f *testing.F) {
	m := ektest.New(f)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(m.EKCert(f, key.Public()))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	now := time.Now()
	f.Fuzz(func(t *testing.T, der []byte) {
		cert, err := verify.ParseEKCertificate(der)
		if err != nil {
			if !errors.Is(err, verify.ErrEKUntrusted) {
				t.Fatalf("parse refusal %v does not wrap ErrEKUntrusted", err)
			}
			return
		}
		if err := verify.VerifyEKCertificate(cert, m.Roots(), m.Intermediates(), now); err != nil && !errors.Is(err, verify.ErrEKUntrusted) {
			t.Fatalf("verify refusal %v does not wrap ErrEKUntrusted", err)
		}
	})
}

// FuzzCertification: fuzzed TPM2_Certify evidence (public area,
// attestation, signature) is decoded and checked against an AK; every
// refusal wraps ErrCertify and nothing panics. Random evidence can never
// carry a valid AK signature, so this exercises the decoders (go-attestation
// and go-tpm's unmarshalers) on hostile input.
func FuzzCertification(f *testing.F) {
	ak, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	// A TPMT_PUBLIC header (RSA, SHA-256), a TPMS_ATTEST magic, and an
	// RSASSA-SHA256 TPMT_SIGNATURE header.
	f.Add([]byte{0x00, 0x01, 0x00, 0x0b, 0x00, 0x05, 0x00, 0x72}, []byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x17}, []byte{0x00, 0x14, 0x00, 0x0b, 0x01, 0x00}, []byte("nonce"))
	f.Fuzz(func(t *testing.T, public, attestation, signature, extra []byte) {
		cp := attest.CertificationParameters{Public: public, CreateAttestation: attestation, CreateSignature: signature}
		err := verify.VerifyCertification(ak.Public(), cp, extra, ak.Public())
		if err == nil {
			t.Fatal("fuzzed certification verified")
		}
		if !errors.Is(err, verify.ErrCertify) {
			t.Fatalf("refusal %v does not wrap ErrCertify", err)
		}
	})
}
