package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"testing"

	"devpki/api/wire"
	"devpki/pkg/registry"
	"devpki/pkg/tpm/verify"
)

func TestPreregister(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	op := f.apiClient(f.adminCert(f.ca, "default", "factory", registry.RoleOperator, ""))
	aud := f.apiClient(f.adminCert(f.ca, "default", "aud", registry.RoleAuditor, ""))
	ek, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&ek.PublicKey)
	pemPub := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))

	got, err := op.Preregister(ctx, &wire.PreregisterRequest{Serial: "SN-PRE-1", MACs: []string{"02:00:00:00:00:aa"}, EKPub: pemPub})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := verify.EKHash(&ek.PublicKey)
	if got.EKHash != want || got.MACs[0] != "0200000000aa" {
		t.Fatalf("reply %+v, want EK hash %s", got, want)
	}
	rec, err := f.store.GetPreregistration(ctx, want)
	if err != nil || rec.Serial != "SN-PRE-1" || rec.TenantID != f.tenant.ID {
		t.Fatalf("registry %+v, %v", rec, err)
	}
	// The same EK again is a conflict; base64 DER is accepted as input.
	_, err = op.Preregister(ctx, &wire.PreregisterRequest{Serial: "SN-PRE-2", EKPub: base64.StdEncoding.EncodeToString(der)})
	wantStatus(t, err, http.StatusConflict, "conflict")
	_, err = aud.Preregister(ctx, &wire.PreregisterRequest{Serial: "SN-PRE-3", EKPub: pemPub})
	wantStatus(t, err, http.StatusForbidden, "forbidden")

	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallDER, _ := x509.MarshalPKIXPublicKey(&small.PublicKey)
	for _, bad := range []struct {
		req  *wire.PreregisterRequest
		slug string
	}{
		{&wire.PreregisterRequest{Serial: "bad serial", EKPub: pemPub}, wire.SlugBadSerial},
		{&wire.PreregisterRequest{Serial: "x/../admin", EKPub: pemPub}, wire.SlugBadSerial},
		{&wire.PreregisterRequest{Serial: "SN-X", MACs: []string{"zz"}, EKPub: pemPub}, wire.SlugBadMAC},
		{&wire.PreregisterRequest{Serial: "SN-X", EKPub: "not a key"}, wire.SlugBadRequest},
		{&wire.PreregisterRequest{Serial: "SN-X", EKPub: base64.StdEncoding.EncodeToString(ecDER)}, wire.SlugBadRequest},
		{&wire.PreregisterRequest{Serial: "SN-X", EKPub: base64.StdEncoding.EncodeToString(smallDER)}, wire.SlugBadRequest},
	} {
		_, err := op.Preregister(ctx, bad.req)
		wantStatus(t, err, http.StatusBadRequest, bad.slug)
	}
}

func TestTPMRoots(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	admin := f.apiClient(f.superAdminCert("root"))
	// A tenant admin may not add a root every tenant trusts.
	_, err := f.apiClient(f.adminCert(f.ca, "default", "tenant-admin", registry.RoleAdmin, "")).AddTPMRoot(ctx,
		&wire.AddTPMRootRequest{PEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.ca.CA.Root.Raw}))})
	wantStatus(t, err, http.StatusForbidden, "forbidden")
	op := f.apiClient(f.adminCert(f.ca, "default", "op", registry.RoleOperator, ""))
	rootPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.ca.CA.Root.Raw}))
	_, err = op.AddTPMRoot(ctx, &wire.AddTPMRootRequest{PEM: rootPEM})
	wantStatus(t, err, http.StatusForbidden, "forbidden")
	got, err := admin.AddTPMRoot(ctx, &wire.AddTPMRootRequest{PEM: rootPEM})
	if err != nil || got.Subject == "" {
		t.Fatalf("add: %+v, %v", got, err)
	}
	_, err = admin.AddTPMRoot(ctx, &wire.AddTPMRootRequest{PEM: rootPEM})
	wantStatus(t, err, http.StatusConflict, "conflict")
	if got.Kind != "root" {
		t.Errorf("self-signed CA added as %q, want root", got.Kind)
	}
	device, _ := f.enrolled("SN-NOT-A-CA")
	notCA := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: device.Raw}))
	for _, bad := range []string{"", "garbage", notCA, rootPEM + rootPEM} {
		_, err := admin.AddTPMRoot(ctx, &wire.AddTPMRootRequest{PEM: bad})
		wantStatus(t, err, http.StatusBadRequest, "bad-request")
	}
	// An issuing CA (not self-signed) is kept as an intermediate.
	inter := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.ca.CA.Intermediate.Raw}))
	gotInter, err := admin.AddTPMRoot(ctx, &wire.AddTPMRootRequest{PEM: inter})
	if err != nil || gotInter.Kind != "intermediate" {
		t.Fatalf("add intermediate: %+v, %v", gotInter, err)
	}
	list, err := op.ListTPMRoots(ctx)
	if err != nil || len(list) != 2 || list[0].Fingerprint != got.Fingerprint || list[0].Kind != "root" ||
		list[1].Fingerprint != gotInter.Fingerprint || list[1].Kind != "intermediate" {
		t.Fatalf("list: %+v, %v", list, err)
	}
}
