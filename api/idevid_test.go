package api_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"testing"
	"time"

	"devpki/api/client"
	"devpki/api/wire"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// idevidEnroll POSTs /v1/enroll without a token over a connection that
// presents cert.
func (f *fixture) idevidEnroll(cert *tls.Certificate, serial string) (*http.Response, []byte) {
	f.t.Helper()
	resp, b, err := f.do(f.newClient(cert), http.MethodPost, "/v1/enroll", "", "application/json",
		bytes.NewReader(enrollBody(f.t, f.csr(serial, macFor(serial)))))
	if err != nil {
		f.t.Fatal(err)
	}
	return resp, b
}

// TestIDevIDEnrollOverTLS: a factory IDevID presented as the TLS client
// certificate on POST /v1/enroll, without a token, enrolls once an admin
// added its manufacturer through the admin API (no restart); leaf-only and
// with its chain; method idevid. Every refusal is a clear 4xx that writes
// nothing but its audit event.
func TestIDevIDEnrollOverTLS(t *testing.T) {
	ctx := context.Background()
	f := newFixtureIDevID(t)
	maker := pkitest.NewManufacturer(t, "Acme")
	cert, key := maker.IssueIDevID(t, pkitest.IDevIDSpec{HWSerial: "ACME-0001"})
	leafOnly := maker.TLSCertificate(cert, key, false)

	// Before the manufacturer is known: 403.
	before := f.counts()
	resp, b := f.idevidEnroll(&leafOnly, "ACME-0001")
	if p := problemOf(t, resp, b, http.StatusForbidden); p.Slug() != wire.SlugIDevIDUnknownManufacturer {
		t.Fatalf("unknown manufacturer: %+v", p)
	}
	if f.counts() != before {
		t.Fatal("a refused IDevID wrote rows")
	}

	// An admin adds the manufacturer's root and intermediate.
	admin := f.apiClient(f.adminCert(f.ca, registry.DefaultTenant, "alice", registry.RoleAdmin, ""))
	added, err := admin.AddIDevIDRoot(ctx, &wire.AddIDevIDRootRequest{PEM: string(maker.PEM())})
	if err != nil || len(added) != 2 || !added[0].Added || added[0].Kind != "root" || added[1].Kind != "intermediate" ||
		added[0].Tenant != registry.DefaultTenant {
		t.Fatalf("AddIDevIDRoot = %+v, %v", added, err)
	}
	again, err := admin.AddIDevIDRoot(ctx, &wire.AddIDevIDRootRequest{PEM: string(maker.PEM())})
	if err != nil || len(again) != 2 || again[0].Added || again[1].Added {
		t.Fatalf("AddIDevIDRoot again = %+v, %v; want idempotent", again, err)
	}
	auditor := f.apiClient(f.adminCert(f.ca, registry.DefaultTenant, "audrey", registry.RoleAuditor, ""))
	if list, err := auditor.ListIDevIDRoots(ctx, ""); err != nil || len(list) != 2 {
		t.Fatalf("ListIDevIDRoots = %+v, %v", list, err)
	}
	_, err = auditor.AddIDevIDRoot(ctx, &wire.AddIDevIDRootRequest{PEM: string(maker.PEM())})
	wantStatus(t, err, http.StatusForbidden, wire.SlugForbidden)
	_, err = admin.AddIDevIDRoot(ctx, &wire.AddIDevIDRootRequest{PEM: string(pemCert(f.ca.CA.Root))})
	wantStatus(t, err, http.StatusBadRequest, wire.SlugBadRequest)
	_, err = admin.AddIDevIDRoot(ctx, &wire.AddIDevIDRootRequest{PEM: string(maker.PEM()), Tenant: "no-such"})
	wantStatus(t, err, http.StatusNotFound, wire.SlugNotFound)

	resp, b = f.idevidEnroll(&leafOnly, "ACME-0001")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("IDevID enroll: %d %s", resp.StatusCode, b)
	}
	var er wire.EnrollResponse
	if err := json.Unmarshal(b, &er); err != nil {
		t.Fatal(err)
	}
	d := f.device("ACME-0001")
	if d == nil || d.ID != er.DeviceID || d.Method != provision.MethodIDevID || d.IDevIDSerial != cert.SerialNumber.Text(16) {
		t.Fatalf("device = %+v", d)
	}

	// With the chain, through api/client (the agent's way), a second device.
	cert2, key2 := maker.IssueIDevID(t, pkitest.IDevIDSpec{SubjectSerial: "ACME-0002"})
	c, err := client.New(f.url, client.WithRoots(f.ca.Roots()), client.WithClientCertificate(maker.TLSCertificate(cert2, key2, true)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.EnrollIDevID(ctx, &wire.EnrollRequest{CSR: string(f.csr("ACME-0002", macFor("ACME-0002")))}); err != nil {
		t.Fatalf("EnrollIDevID with chain: %v", err)
	}

	// Refusals: nothing written, clear 4xx.
	expired, expiredKey := maker.IssueIDevID(t, pkitest.IDevIDSpec{HWSerial: "ACME-OLD",
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	other, otherKey := maker.IssueIDevID(t, pkitest.IDevIDSpec{HWSerial: "ACME-0001"})
	// A certificate of devpki's own CA that does not verify for client
	// authentication (server-only key usage) reaches the IDevID door, and
	// is refused there: a devpki certificate is not an IDevID.
	srvCert := f.ownServerOnlyCert("SN-OURS")
	for _, tc := range []struct {
		name   string
		cert   tls.Certificate
		serial string
		status int
		slug   string
	}{
		{"serial mismatch", leafOnly, "ACME-9999", http.StatusForbidden, wire.SlugIDevIDSerialMismatch},
		{"expired", maker.TLSCertificate(expired, expiredKey, false), "ACME-OLD", http.StatusForbidden, wire.SlugIDevIDInvalid},
		{"a devpki certificate", srvCert, "SN-OURS", http.StatusForbidden, wire.SlugIDevIDInvalid},
		{"another IDevID on an enrolled serial", maker.TLSCertificate(other, otherKey, false), "ACME-0001", http.StatusForbidden,
			wire.SlugCloneSuspect},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := f.counts()
			seq, hits := f.lastSeq(), f.refusalHits("")
			resp, b := f.idevidEnroll(&tc.cert, tc.serial)
			p := problemOf(t, resp, b, tc.status)
			if p.Slug() != tc.slug {
				t.Fatalf("%s: %+v, want %s", tc.name, p, tc.slug)
			}
			t.Logf("%d %s: %s", resp.StatusCode, p.Slug(), p.Detail)
			if f.counts() != before {
				t.Errorf("rows written: %+v -> %+v", before, f.counts())
			}
			// One trace: an admitted IDevID's refusal is chained, one that
			// did not admit (expired, a devpki certificate) is counted.
			evs, counted := f.auditSince(seq), f.refusalHits("")-hits
			chained := len(evs) == 1 && evs[0].Result == registry.ResultDenied
			if chained == (counted == 1) || len(evs) > 1 {
				t.Errorf("audit = %+v and %d refusals counted; want one denial, chained or counted", evs, counted)
			}
		})
	}
	if held, err := f.store.ListQuarantine(ctx, registry.QuarantineFilter{Serial: "ACME-0001"}); err != nil || len(held) != 1 ||
		held[0].Reason != registry.ReasonSerialOtherIDevID {
		t.Fatalf("quarantine = %+v, %v", held, err)
	}

	// A devpki device certificate that verifies is not an IDevID either:
	// without a token it is today's 401.
	enrolled, ekey := f.mustEnroll(f.mint(provision.TokenSpec{}), "SN-DEVPKI")
	dc, err := tls.X509KeyPair([]byte(enrolled.Certificate), keyPEM(t, ekey))
	if err != nil {
		t.Fatal(err)
	}
	resp, b = f.idevidEnroll(&dc, "SN-DEVPKI")
	if p := problemOf(t, resp, b, http.StatusUnauthorized); p.Slug() != wire.SlugTokenInvalid {
		t.Fatalf("devpki certificate on /v1/enroll: %+v", p)
	}
}

// ownServerOnlyCert is a certificate signed by the fixture CA's
// intermediate key for serverAuth only, with a serial like an IDevID's.
func (f *fixture) ownServerOnlyCert(serial string) tls.Certificate {
	f.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "x", SerialNumber: serial},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.ca.CA.Intermediate, key.Public(), f.ca.CA.Signer)
	if err != nil {
		f.t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// TestIDevIDEnrollOverEST: the real IDevID attestor behind EST
// simpleenroll: an IDevID of a manufacturer the tenant trusts enrolls
// (PKCS#7 answer, method idevid), at the tenant's label too; an unknown
// maker and a serial mismatch are 403s that write nothing.
func TestIDevIDEnrollOverEST(t *testing.T) {
	ctx := context.Background()
	f := newFixtureIDevID(t)
	maker := pkitest.NewManufacturer(t, "Acme")
	if _, err := f.admin.AddIDevIDRoot(ctx, provision.AdminActor("alice", f.tenant.ID, ""), "", maker.PEM()); err != nil {
		t.Fatal(err)
	}
	enroll := func(label string, cert tls.Certificate, serial string) (*http.Response, []byte) {
		t.Helper()
		return f.estReq(f.newClient(&cert), http.MethodPost, estPath+label+"/simpleenroll", "application/pkcs10",
			bytes.NewReader(b64CSR(t, f.csr(serial, macFor(serial)))), nil)
	}
	c1, k1 := maker.IssueIDevID(t, pkitest.IDevIDSpec{HWSerial: "EST-IDEV-1"})
	resp, b := enroll("", maker.TLSCertificate(c1, k1, false), "EST-IDEV-1")
	if got := estCerts(t, resp, b)[0]; got.Subject.SerialNumber != "EST-IDEV-1" {
		t.Fatalf("issued %s", got.Subject)
	}
	if d := f.device("EST-IDEV-1"); d == nil || d.Method != provision.MethodIDevID || d.IDevIDSerial != c1.SerialNumber.Text(16) {
		t.Fatalf("device %+v", d)
	}
	c2, k2 := maker.IssueIDevID(t, pkitest.IDevIDSpec{SubjectSerial: "EST-IDEV-2"})
	resp, b = enroll("/"+registry.DefaultTenant, maker.TLSCertificate(c2, k2, true), "EST-IDEV-2")
	estCerts(t, resp, b)

	stranger := pkitest.NewManufacturer(t, "Stranger")
	c3, k3 := stranger.IssueIDevID(t, pkitest.IDevIDSpec{HWSerial: "EST-IDEV-3"})
	c4, k4 := maker.IssueIDevID(t, pkitest.IDevIDSpec{HWSerial: "EST-IDEV-4"})
	for _, tc := range []struct {
		name   string
		cert   tls.Certificate
		serial string
		slug   string
	}{
		{"unknown manufacturer", stranger.TLSCertificate(c3, k3, true), "EST-IDEV-3", wire.SlugIDevIDUnknownManufacturer},
		{"serial mismatch", maker.TLSCertificate(c4, k4, false), "EST-IDEV-OTHER", wire.SlugIDevIDSerialMismatch},
	} {
		before := f.counts()
		resp, b := enroll("", tc.cert, tc.serial)
		estRefused(t, resp, b, http.StatusForbidden, tc.slug)
		if f.counts() != before {
			t.Errorf("%s: rows written", tc.name)
		}
	}
}
