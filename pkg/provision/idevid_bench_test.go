package provision_test

import (
	"context"
	"crypto/x509"
	"testing"

	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/registry/sqlstore"
)

// BenchmarkIDevIDAdmit is the admission step of one IDevID enrollment —
// read the tenants' manufacturer CAs from SQLite, parse them, verify a
// leaf-only IDevID with a critical hardwareModuleName SAN — against a
// registry holding one manufacturer's root and intermediate. Run:
//
//	go test -run '^$' -bench IDevIDAdmit ./pkg/provision
func BenchmarkIDevIDAdmit(b *testing.B) {
	ctx := context.Background()
	store, err := sqlstore.Open(ctx, sqlstore.Options{DSN: b.TempDir() + "/r.db"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	adm, err := provision.NewAdmin(provision.AdminConfig{Store: store, TrustDomain: pkitest.TrustDomain})
	if err != nil {
		b.Fatal(err)
	}
	maker := pkitest.NewManufacturer(b, "Bench")
	if _, err := adm.AddIDevIDRoot(ctx, provision.AdminActor("bench", registry.DefaultTenant, ""), "", maker.PEM()); err != nil {
		b.Fatal(err)
	}
	att := provision.IDevIDAttestor{Store: store}
	idev, _ := maker.IssueIDevID(b, pkitest.IDevIDSpec{HWSerial: "BENCH-1"})
	req := &provision.Request{PeerCerts: []*x509.Certificate{idev}}
	for b.Loop() {
		if _, err := att.Admit(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
