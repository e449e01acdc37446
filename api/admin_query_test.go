package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"devpki/api/client"
	"devpki/api/wire"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

func (f *fixture) apiClient(cert tls.Certificate) *client.Client {
	f.t.Helper()
	c, err := client.New(f.url, client.WithRoots(f.ca.Roots()), client.WithClientCertificate(cert))
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func wantStatus(t *testing.T, err error, status int, slug string) {
	t.Helper()
	var re *client.ResponseError
	if !errors.As(err, &re) || re.StatusCode != status || (slug != "" && (re.Problem == nil || re.Problem.Slug() != slug)) {
		t.Fatalf("got %v, want %d %s", err, status, slug)
	}
}

func TestAdminListAndGet(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	auditor := f.apiClient(f.adminCert(f.ca, "default", "aud", registry.RoleAuditor, ""))
	var ids []string
	for _, serial := range []string{"SN-Q1", "SN-Q2", "SN-Q3"} {
		er, _ := f.mustEnroll(f.mint(provision.TokenSpec{}), serial)
		ids = append(ids, er.DeviceID)
	}
	// Pages of two cover all three devices.
	var got []string
	page, err := auditor.ListDevices(ctx, url.Values{"limit": {"2"}})
	if err != nil || len(page.Devices) != 2 || page.Next == "" {
		t.Fatalf("first page %+v, %v", page, err)
	}
	for _, d := range page.Devices {
		got = append(got, d.ID)
	}
	page, err = auditor.ListDevices(ctx, url.Values{"limit": {"2"}, "after": {page.Next}})
	if err != nil || len(page.Devices) != 1 || page.Next != "" {
		t.Fatalf("second page %+v, %v", page, err)
	}
	got = append(got, page.Devices[0].ID)
	slices.Sort(got)
	slices.Sort(ids)
	if !slices.Equal(got, ids) {
		t.Fatalf("pages listed %v, want %v", got, ids)
	}
	if l, err := auditor.ListDevices(ctx, url.Values{"serial": {"SN-Q2"}}); err != nil || len(l.Devices) != 1 || l.Devices[0].Serial != "SN-Q2" {
		t.Fatalf("serial filter: %+v, %v", l, err)
	}
	if l, err := auditor.ListDevices(ctx, url.Values{"mac": {strings.ReplaceAll(macFor("SN-Q2"), ":", "-")}}); err != nil ||
		len(l.Devices) != 1 || l.Devices[0].ID != ids[1] {
		t.Fatalf("mac filter: %+v, %v", l, err)
	}
	for _, bad := range []url.Values{{"status": {"bogus"}}, {"limit": {"0"}}, {"limit": {"x"}}, {"mac": {"zz"}}} {
		_, err := auditor.ListDevices(ctx, bad)
		wantStatus(t, err, http.StatusBadRequest, "bad-request")
	}
	d, err := auditor.GetDevice(ctx, ids[0])
	if err != nil || d.ID != ids[0] || d.Tenant != "default" || d.Status != "active" {
		t.Fatalf("get device %+v, %v", d, err)
	}
	_, err = auditor.GetDevice(ctx, "no-such-device")
	wantStatus(t, err, http.StatusNotFound, "not-found")

	certs, err := auditor.ListCertificates(ctx, url.Values{"device": {ids[1]}})
	if err != nil || len(certs.Certificates) != 1 || certs.Certificates[0].PEM != "" {
		t.Fatalf("certificates of a device: %+v, %v", certs, err)
	}
	one, err := auditor.GetCertificate(ctx, certs.Certificates[0].Serial)
	if err != nil || one.PEM == "" || one.DeviceID != ids[1] {
		t.Fatalf("get certificate %+v, %v", one, err)
	}
	if l, err := auditor.ListCertificates(ctx, url.Values{"expiring_before": {time.Now().Add(time.Hour).Format(time.RFC3339)}}); err != nil || len(l.Certificates) != 0 {
		t.Fatalf("expiring within the hour: %+v, %v", l, err)
	}
	_, err = auditor.ListCertificates(ctx, url.Values{"expiring_before": {"tomorrow"}})
	wantStatus(t, err, http.StatusBadRequest, "bad-request")
	// Pages soonest-expiring first: the cursor is not-after/serial, and a
	// bare serial (the cursor before migration 00013) is refused.
	cpage, err := auditor.ListCertificates(ctx, url.Values{"limit": {"1"}})
	if err != nil || len(cpage.Certificates) != 1 || !strings.HasSuffix(cpage.Next, "/"+cpage.Certificates[0].Serial) {
		t.Fatalf("first page of one: %+v, %v", cpage, err)
	}
	next, err := auditor.ListCertificates(ctx, url.Values{"limit": {"1"}, "after": {cpage.Next}})
	if err != nil || len(next.Certificates) != 1 || next.Certificates[0].Serial == cpage.Certificates[0].Serial ||
		next.Certificates[0].NotAfter.Before(cpage.Certificates[0].NotAfter) {
		t.Fatalf("second page: %+v, %v (first %+v)", next, err, cpage.Certificates[0])
	}
	_, err = auditor.ListCertificates(ctx, url.Values{"after": {cpage.Certificates[0].Serial}})
	wantStatus(t, err, http.StatusBadRequest, "bad-request")

	// A device certificate is no admin.
	er, key := f.mustEnroll(f.mint(provision.TokenSpec{}), "SN-Q4")
	dev := f.apiClient(deviceTLSCert(t, er, key))
	_, err = dev.ListDevices(ctx, nil)
	wantStatus(t, err, http.StatusForbidden, "forbidden")
}

func deviceTLSCert(t *testing.T, er *wire.EnrollResponse, key any) tls.Certificate {
	t.Helper()
	c := tls.Certificate{PrivateKey: key}
	for _, p := range append([]string{er.Certificate}, er.Chain...) {
		b, _ := pem.Decode([]byte(p))
		c.Certificate = append(c.Certificate, b.Bytes)
	}
	return c
}

func TestAdminRotateForcesRekey(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	admin := f.apiClient(f.adminCert(f.ca, "default", "root", registry.RoleAdmin, ""))
	operator := f.apiClient(f.adminCert(f.ca, "default", "op", registry.RoleOperator, ""))
	er, key := f.mustEnroll(f.mint(provision.TokenSpec{}), "SN-ROT")

	_, err := operator.RotateDevice(ctx, er.DeviceID, nil)
	wantStatus(t, err, http.StatusForbidden, "forbidden")
	past := time.Now().Add(-time.Hour)
	_, err = admin.RotateDevice(ctx, er.DeviceID, &wire.RotateRequest{Deadline: &past})
	wantStatus(t, err, http.StatusBadRequest, "bad-request")
	_, err = admin.RotateDevice(ctx, "no-such-device", nil)
	wantStatus(t, err, http.StatusNotFound, "not-found")
	deadline := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	d, err := admin.RotateDevice(ctx, er.DeviceID, &wire.RotateRequest{Deadline: &deadline})
	if err != nil || !d.RekeyRequired || d.RekeyDeadline == nil || !d.RekeyDeadline.Equal(deadline) {
		t.Fatalf("rotate: %+v, %v", d, err)
	}
	// The device's next same-key renewal is refused with rekey-required.
	dev := f.apiClient(deviceTLSCert(t, er, key))
	_, err = dev.Renew(ctx, nil)
	wantStatus(t, err, http.StatusConflict, wire.SlugRekeyRequired)
	if !client.IsRekeyRequired(err) {
		t.Fatal("IsRekeyRequired is false for the CA's answer")
	}
	// A new key is accepted and clears the flag.
	_, _, csr := f.keyAndCSR("SN-ROT")
	if _, err := dev.Renew(ctx, &wire.RenewRequest{CSR: string(csr)}); err != nil {
		t.Fatalf("re-key: %v", err)
	}
	if d, _ := admin.GetDevice(ctx, er.DeviceID); d.RekeyRequired {
		t.Fatal("re-key did not clear the rotate flag")
	}
	evs, err := admin.ListAudit(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var rotated, denied bool
	for _, ev := range evs.Events {
		rotated = rotated || (ev.Action == "device.rotate" && ev.Result == registry.ResultOK && ev.Target == er.DeviceID)
		denied = denied || (ev.Action == "renew" && ev.Result == registry.ResultDenied)
	}
	if !rotated || !denied {
		t.Fatalf("audit lacks the rotate (%v) or the refused renewal (%v)", rotated, denied)
	}
	page, err := admin.ListAudit(ctx, 0, 2)
	if err != nil || len(page.Events) != 2 || page.Next != page.Events[1].Seq {
		t.Fatalf("audit page: %+v, %v", page, err)
	}
}

func TestAdminIssueComponentCertificate(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	admin := f.apiClient(f.adminCert(f.ca, "default", "root", registry.RoleAdmin, ""))
	operator := f.apiClient(f.adminCert(f.ca, "default", "op", registry.RoleOperator, ""))
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "ignored"}, DNSNames: []string{"evil.example"},
	}, key)
	csr := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))

	res, err := admin.Issue(ctx, &wire.IssueRequest{CSR: csr, Usage: "server", DNSNames: []string{"ingest.local"}, IPs: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode([]byte(res.Certificate))
	c, _ := x509.ParseCertificate(b.Bytes)
	if !slices.Equal(c.DNSNames, []string{"ingest.local"}) || len(c.IPAddresses) != 1 || !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Fatalf("server certificate names %v %v, EKU %v (the CSR's names must be ignored)", c.DNSNames, c.IPAddresses, c.ExtKeyUsage)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: f.ca.Roots(), Intermediates: f.ca.Intermediates(), DNSName: "ingest.local"}); err != nil {
		t.Fatal(err)
	}
	rec, err := f.store.GetCertificate(ctx, c.SerialNumber.Text(16))
	if err != nil || rec.Kind != registry.KindServer {
		t.Fatalf("record %+v, %v", rec, err)
	}
	if res, err := admin.Issue(ctx, &wire.IssueRequest{CSR: csr, Usage: "client", CommonName: "broker-1"}); err != nil {
		t.Fatal(err)
	} else if b, _ := pem.Decode([]byte(res.Certificate)); b == nil {
		t.Fatal("no client certificate")
	}
	_, err = operator.Issue(ctx, &wire.IssueRequest{CSR: csr, Usage: "server", DNSNames: []string{"x"}})
	wantStatus(t, err, http.StatusForbidden, "forbidden")
	for _, bad := range []*wire.IssueRequest{
		{CSR: csr, Usage: "both"},
		{CSR: csr, Usage: "server"},
		{CSR: csr, Usage: "client"},
		{CSR: "garbage", Usage: "server", DNSNames: []string{"x"}},
		{CSR: csr, Usage: "server", IPs: []string{"not-an-ip"}},
		{CSR: csr, Usage: "server", DNSNames: []string{"x"}, Lifetime: "forever"},
		{CSR: csr, Usage: "server", DNSNames: []string{"x"}, Lifetime: "100000h"},
		// Names a certificate may not carry (RFC 5280; zlint's RFC lints).
		{CSR: csr, Usage: "server", DNSNames: []string{"host.example."}},
		{CSR: csr, Usage: "server", DNSNames: []string{strings.Repeat("a", 64) + ".example"}},
		{CSR: csr, Usage: "server", DNSNames: []string{"*.example"}},
		{CSR: csr, Usage: "server", DNSNames: []string{"bücher.example"}},
		{CSR: csr, Usage: "server", DNSNames: []string{"x"}, CommonName: strings.Repeat("a", 65)},
		{CSR: csr, Usage: "server", DNSNames: []string{"x"}, CommonName: " padded "},
	} {
		_, err := admin.Issue(ctx, bad)
		var re *client.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusBadRequest {
			t.Errorf("%+v: %v, want 400", bad, err)
		}
	}
}
