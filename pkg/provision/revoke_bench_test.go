package provision_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/registry/sqlstore"
)

// BenchmarkRebuildCRL100k measures what a revocation costs with 100,000
// revoked, unexpired certificates in a SQLite registry: read them
// (EachRevoked), take a CRL number, build and sign the CRL.
func BenchmarkRebuildCRL100k(b *testing.B) {
	const n = 100_000
	ctx := context.Background()
	tca := pkitest.NewCA(b)
	store, err := sqlstore.Open(ctx, sqlstore.Options{DSN: b.TempDir() + "/r.db"})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	now := time.Now()
	at := now.Add(-time.Hour)
	var wg sync.WaitGroup
	const workers = 64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var sn [20]byte
			for i := w; i < n; i += workers {
				rand.Read(sn[:])
				sn[0] = sn[0]&0x7f | 0x01
				c := &registry.Certificate{
					Serial: hexTrim(sn[:]), Kind: registry.KindClient, Subject: "CN=x", NotBefore: now.Add(-time.Hour),
					NotAfter: now.Add(720 * time.Hour), DER: []byte{1}, Status: registry.CertRevoked,
					RevokedAt: &at, RevocationReason: i % 6,
				}
				if err := store.RecordCertificate(ctx, c, nil); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	rev, err := provision.NewRevocation(provision.RevocationConfig{
		Store: store, CRLSigner: tca.CA, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	var crl *provision.CRL
	b.ResetTimer()
	for b.Loop() {
		if crl, err = rev.RebuildCRL(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if crl.Entries != n {
		b.Fatalf("CRL has %d entries, want %d", crl.Entries, n)
	}
	b.ReportMetric(float64(len(crl.DER)), "bytes/crl")
}

func hexTrim(b []byte) string {
	s := hex.EncodeToString(b)
	for len(s) > 1 && s[0] == '0' {
		s = s[1:]
	}
	return s
}

// BenchmarkOCSPCached measures answering an OCSP request whose response
// is cached: parse the request, check the issuer, look up the cache.
func BenchmarkOCSPCached(b *testing.B) {
	ctx := context.Background()
	tca := pkitest.NewCA(b)
	store, err := sqlstore.Open(ctx, sqlstore.Options{DSN: b.TempDir() + "/r.db"})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	key, _, _ := tca.DeviceKeyAndCSR(b, "SN-B", "02:00:00:00:00:01")
	cert := tca.IssueDevice(b, pki.Identity{DeviceID: "d", Tenant: "default", Serial: "SN-B"}, key).Certificate
	if err := store.RecordCertificate(ctx, provision.CertificateRecord(cert, registry.KindDevice, "", "", time.Now()), nil); err != nil {
		b.Fatal(err)
	}
	resp, err := pki.NewOCSPResponder(ctx, pki.OCSPResponderOptions{CA: tca.CA})
	if err != nil {
		b.Fatal(err)
	}
	rev, err := provision.NewRevocation(provision.RevocationConfig{
		Store: store, CRLSigner: tca.CA, OCSP: resp, Refresh: time.Hour,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	req, err := ocsp.CreateRequest(cert, tca.CA.Intermediate, nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := rev.OCSP(ctx, req); err != nil { // fill the cache
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := rev.OCSP(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
