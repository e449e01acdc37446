//go:build tpmsimulator

package api_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"
	"testing"

	"devpki/api/client"
	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/tpm"
)

// TestTPMRekeyOverHTTP: a TPM-enrolled device renews over mutual TLS with
// its TPM key; a re-key needs the certification of the new key by its AK
// over the SHA-256 of the presented certificate (403 tpm-certify-required
// without, 403 tpm-certify-invalid when wrong), and nothing is written on a
// refusal.
func TestTPMRekeyOverHTTP(t *testing.T) {
	ctx := context.Background()
	f, m, anon := newSimFixture(t)
	d := openSimDevice(t, "00000000000000a3", m)
	const serial = "SN-HTTP-REKEY"
	// deviceClient presents the certificate of res with key over mTLS.
	deviceClient := func(t *testing.T, res *wire.EnrollResponse, key *tpm.Key) (*client.Client, *x509.Certificate) {
		t.Helper()
		signer, err := key.Signer(ctx)
		if err != nil {
			t.Fatal(err)
		}
		tc := deviceTLSCert(t, res, signer)
		leaf, err := x509.ParseCertificate(tc.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.New(f.url, client.WithRoots(f.ca.Roots()), client.WithClientCertificate(tc))
		if err != nil {
			t.Fatal(err)
		}
		return c, leaf
	}
	extraFor := func(cert *x509.Certificate) []byte {
		h := sha256.Sum256(cert.Raw)
		return h[:]
	}

	// Enroll by attestation.
	ch, err := anon.TPMChallenge(ctx, d.claim(t, serial))
	if err != nil {
		t.Fatal(err)
	}
	enrolled := d.answer(t, ch, serial)
	res, err := anon.TPMEnroll(ctx, enrolled.Request)
	if err != nil {
		t.Fatal(err)
	}
	dev, cur := deviceClient(t, res, enrolled.Key)

	wantRefused := func(t *testing.T, req *wire.RenewRequest, slug, detail string) {
		t.Helper()
		before := f.counts()
		_, err := dev.Renew(ctx, req)
		var re *client.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusForbidden || re.Problem == nil || re.Problem.Slug() != slug {
			t.Fatalf("Renew = %v, want 403 %s", err, slug)
		}
		if !strings.Contains(re.Problem.Detail, detail) {
			t.Errorf("detail %q, want it to contain %q", re.Problem.Detail, detail)
		}
		if after := f.counts(); after != before {
			t.Errorf("rows %+v → %+v: a refusal wrote", before, after)
		}
	}

	t.Run("re-key without certify", func(t *testing.T) {
		_, _, csr := d.certifiedKey(t, extraFor(cur), serial)
		wantRefused(t, &wire.RenewRequest{CSR: csr}, wire.SlugTPMCertifyRequired,
			"a new key must be created and certified by the same TPM (enroll rekey on the device)")
	})
	t.Run("re-key to a software key", func(t *testing.T) {
		wantRefused(t, &wire.RenewRequest{CSR: string(f.csr(serial))}, wire.SlugTPMCertifyRequired, "enroll rekey")
	})
	t.Run("certify over the wrong extraData", func(t *testing.T) {
		_, cp, csr := d.certifiedKey(t, ch.Nonce, serial)
		wantRefused(t, &wire.RenewRequest{CSR: csr, Certify: cp}, wire.SlugTPMCertifyInvalid, "extraData")
	})
	t.Run("certify of another key", func(t *testing.T) {
		_, cp, _ := d.certifiedKey(t, extraFor(cur), serial)
		_, _, csr := d.certifiedKey(t, extraFor(cur), serial)
		wantRefused(t, &wire.RenewRequest{CSR: csr, Certify: cp}, wire.SlugTPMCertifyInvalid, "not the expected key")
	})

	t.Run("attested re-key", func(t *testing.T) {
		newK, cp, csr := d.certifiedKey(t, extraFor(cur), serial)
		got, err := dev.Renew(ctx, &wire.RenewRequest{CSR: csr, Certify: cp})
		if err != nil {
			t.Fatal(err)
		}
		id, err := pki.DeviceIdentity(leafOf(t, got.Certificate), pkitest.TrustDomain)
		if err != nil || id.EKHash != d.ekHash || id.DeviceID != res.DeviceID {
			t.Fatalf("identity = %+v, %v; want device %s with EK %s", id, err, res.DeviceID, d.ekHash)
		}
		if d, err := f.store.GetDevice(ctx, res.DeviceID); err != nil || d.Method != "tpm" {
			t.Fatalf("device = %+v, %v; want Method tpm", d, err)
		}
		// The new certificate and key work on a new connection: a
		// same-key renewal.
		next, _ := deviceClient(t, got, newK)
		if _, err := next.Renew(ctx, nil); err != nil {
			t.Fatalf("same-key renewal with the re-keyed certificate: %v", err)
		}
	})
}
