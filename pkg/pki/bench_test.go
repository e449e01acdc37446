package pki_test

import (
	"context"
	"testing"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
)

// BenchmarkIssueDevice measures the issuance hot path: template, serial,
// softcas signing (ECDSA P-256 intermediate) and the parse softcas does.
func BenchmarkIssueDevice(b *testing.B) {
	tca := pkitest.NewCA(b)
	req := &pki.DeviceRequest{
		Identity:  pki.Identity{DeviceID: "dev-0001", Tenant: "acme", Serial: "SN0001", MACs: []string{"aabbccddeeff"}},
		PublicKey: keys()["p256"].Public(),
	}
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tca.Issuer.IssueDevice(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := tca.Issuer.IssueDevice(ctx, req); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkCSRCheck measures ParseCSRPEM + CSRPolicy.Check (signature
// verification dominates) on a P-256 device CSR.
func BenchmarkCSRCheck(b *testing.B) {
	tca := pkitest.NewCA(b)
	_, _, p := tca.DeviceKeyAndCSR(b, "SN0001", "aa:bb:cc:dd:ee:ff", "00:11:22:33:44:55")
	var policy pki.CSRPolicy
	b.ReportAllocs()
	for b.Loop() {
		csr, err := pki.ParseCSRPEM(p)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := policy.Check(csr); err != nil {
			b.Fatal(err)
		}
	}
}
