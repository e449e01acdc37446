package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"slices"
	"testing"

	"devpki/pkg/pki"
)

// FuzzCSRIntake feeds fuzzed PEM (and, unwrapped, DER) through the CSR
// intake every enrollment door uses: ParseCSRPEM/ParseCSRDER, then
// CSRPolicy.Check. A refusal must wrap ErrBadCSR; an accepted CSR must
// carry a valid serial and canonical MACs, with a verified signature. Run
// longer with: go test -run '^$' -fuzz FuzzCSRIntake -fuzztime 10m ./pkg/pki
func FuzzCSRIntake(f *testing.F) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	der, err := pki.NewDeviceCSR(key, "SN-FUZZ-0001", []string{"02:00:00:00:00:01", "02:00:00:00:00:02"})
	if err != nil {
		f.Fatal(err)
	}
	good := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	f.Add(good)
	f.Add(append(append([]byte{}, good...), "trailing"...))
	f.Add(der)
	f.Add(append(append([]byte{}, der...), 0))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n"))
	policies := []pki.CSRPolicy{{}, {AllowP384: true, AllowEd25519: true, AllowRSA: true}}
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, parse := range []func([]byte) (*x509.CertificateRequest, error){pki.ParseCSRPEM, pki.ParseCSRDER} {
			csr, err := parse(in)
			if err != nil {
				if !errors.Is(err, pki.ErrBadCSR) {
					t.Fatalf("refusal %v does not wrap ErrBadCSR", err)
				}
				continue
			}
			for _, p := range policies {
				claims, err := p.Check(csr)
				if err != nil {
					if !errors.Is(err, pki.ErrBadCSR) {
						t.Fatalf("Check refusal %v does not wrap ErrBadCSR", err)
					}
					continue
				}
				if err := csr.CheckSignature(); err != nil {
					t.Fatalf("accepted a CSR whose signature does not verify: %v", err)
				}
				if err := pki.ValidateSerial(claims.Serial); err != nil {
					t.Fatalf("accepted serial %q: %v", claims.Serial, err)
				}
				norm, err := pki.NormalizeMACs(claims.MACs)
				if err != nil || !slices.Equal(norm, claims.MACs) {
					t.Fatalf("accepted MACs %q are not canonical (%q, %v)", claims.MACs, norm, err)
				}
			}
		}
	})
}
