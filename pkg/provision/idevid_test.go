package provision_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// idevidFixture is a registry, an Admin and an IDevIDAttestor over it,
// and a manufacturer whose CAs the default tenant trusts.
type idevidFixture struct {
	*adminFixture
	maker *pkitest.Manufacturer
	att   provision.IDevIDAttestor
}

func newIDevIDFixture(t *testing.T) *idevidFixture {
	t.Helper()
	f := &idevidFixture{adminFixture: newAdminFixture(t), maker: pkitest.NewManufacturer(t, "Acme")}
	var err error
	f.adm, err = provision.NewAdmin(provision.AdminConfig{Store: f.store, TrustDomain: pkitest.TrustDomain,
		CA: []*x509.Certificate{f.ca.CA.Root, f.ca.CA.Intermediate}})
	if err != nil {
		t.Fatal(err)
	}
	f.att = provision.IDevIDAttestor{Store: f.store, CA: []*x509.Certificate{f.ca.CA.Root, f.ca.CA.Intermediate}}
	// Added after the attestor was made: it reads the store each time.
	added, err := f.adm.AddIDevIDRoot(context.Background(), f.alice, "", f.maker.PEM())
	if err != nil || len(added) != 2 || !added[0].Added || added[0].CA.Kind != registry.IDevIDRoot ||
		added[1].CA.Kind != registry.IDevIDIntermediate || added[0].CA.TenantID != registry.DefaultTenant {
		t.Fatalf("AddIDevIDRoot = %+v, %v", added, err)
	}
	return f
}

func (f *idevidFixture) enrollIDevID(t *testing.T, certs []*x509.Certificate, serial string) (*provision.Result, error) {
	t.Helper()
	return f.svc.Enroll(context.Background(), f.att, &provision.Request{
		PeerCerts: certs, CSRPEM: csrFor(t, serial, macFor(serial)), SourceAddr: "192.0.2.80",
	})
}

// TestIDevIDEnroll: an IDevID with a critical hardwareModuleName SAN and
// the 9999 notAfter, sent leaf-only (its intermediate is registered),
// enrolls its serial with method idevid; the registry keeps its issuer and
// serial; the same IDevID again re-enrolls the same device. One with a
// subject serialNumber, sent with its chain, enrolls too.
func TestIDevIDEnroll(t *testing.T) {
	ctx := context.Background()
	f := newIDevIDFixture(t)
	idev, _ := f.maker.IssueIDevID(t, pkitest.IDevIDSpec{HWSerial: "ACME-0001"})
	if len(idev.UnhandledCriticalExtensions) != 1 {
		t.Fatalf("test IDevID: unhandled critical extensions %v, want the SAN", idev.UnhandledCriticalExtensions)
	}
	res, err := f.enrollIDevID(t, []*x509.Certificate{idev}, "ACME-0001")
	if err != nil {
		t.Fatalf("enroll by IDevID: %v", err)
	}
	d, err := f.store.GetDevice(ctx, res.DeviceID)
	if err != nil || d.Method != provision.MethodIDevID || d.Serial != "ACME-0001" || d.IDevIDIssuer != idev.Issuer.String() ||
		d.IDevIDSerial != idev.SerialNumber.Text(16) || d.TenantID != registry.DefaultTenant {
		t.Fatalf("device = %+v, %v", d, err)
	}
	if len(idev.UnhandledCriticalExtensions) != 1 {
		t.Error("the attestor changed the presented certificate")
	}
	ev := lastAudit(t, f.store)
	if ev.Action != string(provision.ActionEnroll) || ev.Actor != "idevid:"+provision.IDevIDName(d.IDevIDIssuer, d.IDevIDSerial) ||
		!strings.Contains(ev.Detail, "method=idevid") {
		t.Errorf("audit = %+v", ev)
	}
	// The same IDevID again (e.g. a factory reset): the same device.
	again, err := f.enrollIDevID(t, []*x509.Certificate{idev}, "acme-0001")
	if err != nil || again.DeviceID != res.DeviceID {
		t.Fatalf("re-enrollment by the same IDevID = %+v, %v; want device %s", again, err, res.DeviceID)
	}
	if c, err := f.store.GetCertificate(ctx, pki.SerialHex(res.Certificate.SerialNumber)); err != nil || c.Status != registry.CertRevoked {
		t.Errorf("first certificate after re-enrollment = %+v, %v; want revoked (superseded)", c, err)
	}

	// A token bound to the serial (an operator's explicit word) re-enrolls
	// it too, and the device stays bound to its IDevID.
	if _, err := f.enroll(t, f.mint(t, provision.TokenSpec{Serial: "ACME-0001"}), "ACME-0001", macFor("ACME-0001")); err != nil {
		t.Fatalf("re-enrollment by a serial-bound token: %v", err)
	}
	if d, err := f.store.GetDevice(ctx, res.DeviceID); err != nil || d.Method != provision.MethodToken ||
		d.IDevIDSerial != idev.SerialNumber.Text(16) {
		t.Fatalf("after the token re-enrollment: %+v, %v; want method token, the IDevID kept", d, err)
	}
	if _, err := f.enrollIDevID(t, []*x509.Certificate{idev}, "ACME-0001"); err != nil {
		t.Fatalf("the IDevID after a token re-enrollment: %v", err)
	}

	bySubject, _ := f.maker.IssueIDevID(t, pkitest.IDevIDSpec{SubjectSerial: "ACME-0002",
		NotAfter: time.Now().Add(24 * time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if _, err := f.enrollIDevID(t, []*x509.Certificate{bySubject, f.maker.Intermediate}, "ACME-0002"); err != nil {
		t.Fatalf("IDevID with a subject serialNumber and its chain: %v", err)
	}
	if err := f.store.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestIDevIDRefusals: every IDevID that must not enroll is refused with
// its own error before anything is signed or written (but the audit
// event of the refusal).
func TestIDevIDRefusals(t *testing.T) {
	ctx := context.Background()
	f := newIDevIDFixture(t)
	stranger := pkitest.NewManufacturer(t, "Unknown Maker")
	good := func(serial string) *x509.Certificate {
		c, _ := f.maker.IssueIDevID(t, pkitest.IDevIDSpec{HWSerial: serial})
		return c
	}
	spec := func(s pkitest.IDevIDSpec) *x509.Certificate {
		c, _ := f.maker.IssueIDevID(t, s)
		return c
	}
	strange, _ := stranger.IssueIDevID(t, pkitest.IDevIDSpec{HWSerial: "SN-STRANGER"})
	key, _, _ := f.ca.DeviceKeyAndCSR(t, "SN-OURS", macFor("SN-OURS"))
	ours := f.ca.IssueDevice(t, pki.Identity{DeviceID: "dev-ours", Tenant: registry.DefaultTenant, Serial: "SN-OURS",
		TrustDomain: pkitest.TrustDomain}, key).Certificate
	for _, tc := range []struct {
		name   string
		certs  []*x509.Certificate
		serial string
		want   error
	}{
		{"no certificate", nil, "SN-NONE", provision.ErrIDevIDRequired},
		{"unknown manufacturer", []*x509.Certificate{strange, stranger.Intermediate}, "SN-STRANGER", provision.ErrIDevIDUnknownManufacturer},
		{"expired", []*x509.Certificate{spec(pkitest.IDevIDSpec{HWSerial: "SN-OLD",
			NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})}, "SN-OLD", provision.ErrIDevIDInvalid},
		{"not yet valid", []*x509.Certificate{spec(pkitest.IDevIDSpec{HWSerial: "SN-EARLY",
			NotBefore: time.Now().Add(24 * time.Hour)})}, "SN-EARLY", provision.ErrIDevIDInvalid},
		{"server-only extended key usage", []*x509.Certificate{spec(pkitest.IDevIDSpec{HWSerial: "SN-EKU",
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})}, "SN-EKU", provision.ErrIDevIDInvalid},
		{"key usage without digitalSignature", []*x509.Certificate{spec(pkitest.IDevIDSpec{HWSerial: "SN-KU",
			KeyUsage: x509.KeyUsageKeyEncipherment})}, "SN-KU", provision.ErrIDevIDInvalid},
		{"a CA certificate", []*x509.Certificate{spec(pkitest.IDevIDSpec{HWSerial: "SN-CA", IsCA: true,
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign})}, "SN-CA", provision.ErrIDevIDInvalid},
		{"no serial", []*x509.Certificate{spec(pkitest.IDevIDSpec{})}, "SN-NOSERIAL", provision.ErrIDevIDInvalid},
		{"two serials", []*x509.Certificate{spec(pkitest.IDevIDSpec{HWSerial: "SN-A", SubjectSerial: "SN-B"})}, "SN-A", provision.ErrIDevIDInvalid},
		{"hostile hardware serial", []*x509.Certificate{spec(pkitest.IDevIDSpec{HWSerial: "SN/../x"})}, "SN-X", provision.ErrIDevIDInvalid},
		{"critical SAN with an unknown otherName", []*x509.Certificate{spec(pkitest.IDevIDSpec{HWSerial: "SN-OTHER",
			ExtraOtherName: true})}, "SN-OTHER", provision.ErrIDevIDInvalid},
		{"a devpki certificate", []*x509.Certificate{ours}, "SN-OURS", provision.ErrIDevIDInvalid},
		{"a devpki certificate with a factory chain", []*x509.Certificate{ours, f.maker.Intermediate}, "SN-OURS", provision.ErrIDevIDInvalid},
		{"serial mismatch", []*x509.Certificate{good("SN-REAL")}, "SN-FAKE", provision.ErrIDevIDSerialMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seq, hits := lastAudit(t, f.store).Seq, refusalHits(t, f.store, string(provision.ActionEnroll))
			signed := f.issuer.n.Load()
			res, err := f.enrollIDevID(t, tc.certs, tc.serial)
			if res != nil || !errors.Is(err, tc.want) {
				t.Fatalf("Enroll = %+v, %v; want %v", res, err, tc.want)
			}
			t.Logf("refused: %v", err)
			if n := f.issuer.n.Load() - signed; n != 0 {
				t.Errorf("%d signatures for a refused request", n)
			}
			if _, err := f.store.GetDeviceBySerial(ctx, registry.DefaultTenant, tc.serial); !errors.Is(err, registry.ErrNotFound) {
				t.Errorf("device %s recorded: %v", tc.serial, err)
			}
			// An IDevID that did not admit (no certificate, unknown maker,
			// not acceptable) is no one authenticated: counted in the
			// refusal log. An admitted one refused later is chained.
			evs, err := f.store.ListAudit(ctx, seq, 10)
			counted := refusalHits(t, f.store, string(provision.ActionEnroll)) - hits
			chained := len(evs) == 1 && evs[0].Result == registry.ResultDenied && evs[0].Action == string(provision.ActionEnroll)
			if err != nil || (chained == (counted == 1)) || len(evs) > 1 {
				t.Errorf("audit after the refusal = %+v, %v, %d counted; want one denied enroll event, chained or counted", evs, err, counted)
			}
		})
	}
	if ds, err := f.store.ListDevices(ctx, registry.DeviceFilter{}); err != nil || len(ds) != 0 {
		t.Errorf("devices after the refusals: %d, %v", len(ds), err)
	}
	if err := f.store.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestIDevIDClone: a second IDevID claiming an enrolled serial, and an
// IDevID claiming a serial enrolled by token, are held for an admin
// (nothing signed, no token spent); releasing the claim re-binds the
// device to the claimant's IDevID, which then re-enrolls it.
func TestIDevIDClone(t *testing.T) {
	ctx := context.Background()
	f := newIDevIDFixture(t)
	first, _ := f.maker.IssueIDevID(t, pkitest.IDevIDSpec{HWSerial: "SN-TWIN"})
	res, err := f.enrollIDevID(t, []*x509.Certificate{first}, "SN-TWIN")
	if err != nil {
		t.Fatal(err)
	}
	second, _ := f.maker.IssueIDevID(t, pkitest.IDevIDSpec{SubjectSerial: "SN-TWIN"})
	signed := f.issuer.n.Load()
	_, err = f.enrollIDevID(t, []*x509.Certificate{second}, "SN-TWIN")
	id := provision.QuarantineID(err)
	if !errors.Is(err, provision.ErrCloneSuspect) || id == "" {
		t.Fatalf("second IDevID on an enrolled serial: %v, want a held clone suspect", err)
	}
	q, err := f.store.GetQuarantine(ctx, id)
	if err != nil || q.Reason != registry.ReasonSerialOtherIDevID || q.IDevIDSerial != second.SerialNumber.Text(16) ||
		q.ConflictIDevIDSerial != first.SerialNumber.Text(16) || q.ConflictDeviceID != res.DeviceID || q.Status != registry.QuarantineHeld {
		t.Fatalf("held claim = %+v, %v", q, err)
	}

	// A serial enrolled by token: an IDevID claiming it is held as well.
	tok := f.mint(t, provision.TokenSpec{})
	if _, err := f.enroll(t, tok, "SN-BYTOKEN", macFor("SN-BYTOKEN")); err != nil {
		t.Fatal(err)
	}
	late, _ := f.maker.IssueIDevID(t, pkitest.IDevIDSpec{HWSerial: "SN-BYTOKEN"})
	_, err = f.enrollIDevID(t, []*x509.Certificate{late}, "SN-BYTOKEN")
	lateID := provision.QuarantineID(err)
	if !errors.Is(err, provision.ErrCloneSuspect) || lateID == "" {
		t.Fatalf("IDevID on a serial enrolled by token: %v, want held", err)
	}
	if f.issuer.n.Load() != signed+1 {
		t.Errorf("signatures: %d, want only the token enrollment's", f.issuer.n.Load()-signed)
	}

	// The admin releases the first claim: the device is bound to the
	// second IDevID, which re-enrolls it; the first IDevID is now the
	// stranger.
	rev, err := provision.NewRevocation(provision.RevocationConfig{Store: f.store, CRLSigner: f.ca.CA})
	if err != nil {
		t.Fatal(err)
	}
	rel, err := rev.ReleaseQuarantine(ctx, f.alice, id, registry.ReasonSuperseded)
	if err != nil || rel.Device.IDevIDSerial != second.SerialNumber.Text(16) || rel.Device.ID != res.DeviceID {
		t.Fatalf("release = %+v, %v", rel, err)
	}
	if r2, err := f.enrollIDevID(t, []*x509.Certificate{second}, "SN-TWIN"); err != nil || r2.DeviceID != res.DeviceID {
		t.Fatalf("claimant after release = %+v, %v; want device %s", r2, err, res.DeviceID)
	}
	if _, err := f.enrollIDevID(t, []*x509.Certificate{first}, "SN-TWIN"); !errors.Is(err, provision.ErrCloneSuspect) {
		t.Fatalf("the first IDevID after the release: %v, want a clone suspect", err)
	}
	if err := f.store.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestIDevIDTenants: the device joins the tenant whose root verifies it; a
// manufacturer trusted by two tenants is refused (ambiguous); admins add
// and list CAs of their own tenant only; a re-add is idempotent; bad
// bundles and devpki's own CA are refused, each writing nothing.
func TestIDevIDTenants(t *testing.T) {
	ctx := context.Background()
	f := newIDevIDFixture(t)
	beta := pkitest.NewManufacturer(t, "Beta")
	if _, err := f.adm.AddIDevIDRoot(ctx, f.alice, "other", beta.PEM()); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("alice adds to tenant other: %v, want ErrNotFound (out of scope)", err)
	}
	if _, err := f.adm.ListIDevIDRoots(ctx, f.oscar, registry.DefaultTenant); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("oscar lists the default tenant's: %v, want ErrNotFound (out of scope)", err)
	}
	added, err := f.adm.AddIDevIDRoot(ctx, f.oscar, "other", beta.PEM())
	if err != nil || len(added) != 2 || added[0].CA.TenantID != f.other.ID {
		t.Fatalf("oscar adds to his tenant: %+v, %v", added, err)
	}
	idev, _ := beta.IssueIDevID(t, pkitest.IDevIDSpec{HWSerial: "BETA-1"})
	res, err := f.enrollIDevID(t, []*x509.Certificate{idev}, "BETA-1")
	if err != nil {
		t.Fatal(err)
	}
	if d, err := f.store.GetDevice(ctx, res.DeviceID); err != nil || d.TenantID != f.other.ID {
		t.Fatalf("device = %+v, %v; want tenant other", d, err)
	}

	// Idempotent: the same bundle again writes nothing.
	seq := lastAudit(t, f.store).Seq
	again, err := f.adm.AddIDevIDRoot(ctx, f.alice, "", f.maker.PEM())
	if err != nil || len(again) != 2 || again[0].Added || again[1].Added {
		t.Fatalf("re-add = %+v, %v; want both already trusted", again, err)
	}
	if lastAudit(t, f.store).Seq != seq {
		t.Error("a re-add wrote an audit event")
	}
	for _, bad := range []struct {
		name string
		pem  []byte
	}{
		{"empty", nil},
		{"junk", []byte("not pem")},
		{"an IDevID, not a CA", pemOf(idev)},
		{"devpki's root", pemOf(f.ca.CA.Root)},
		{"devpki's intermediate in a bundle", append(pemOf(beta.Root), pemOf(f.ca.CA.Intermediate)...)},
		{"trailing text", append(beta.PEM(), "junk"...)},
	} {
		seq := lastAudit(t, f.store).Seq
		if _, err := f.adm.AddIDevIDRoot(ctx, f.alice, "", bad.pem); !errors.Is(err, provision.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", bad.name, err)
		}
		if ev := lastAudit(t, f.store); ev.Seq != seq+1 || ev.Result != registry.ResultDenied {
			t.Errorf("%s: refusal not audited: %+v", bad.name, ev)
		}
	}
	cas, err := f.adm.ListIDevIDRoots(ctx, f.alice, "")
	if err != nil || len(cas) != 2 {
		t.Fatalf("alice's IDevID CAs: %d, %v; want 2", len(cas), err)
	}

	// Beta trusted by both tenants: whose device is it? Refused.
	if _, err := f.adm.AddIDevIDRoot(ctx, f.alice, "", pemOf(beta.Root)); err != nil {
		t.Fatal(err)
	}
	idev2, _ := beta.IssueIDevID(t, pkitest.IDevIDSpec{HWSerial: "BETA-2"})
	if _, err := f.enrollIDevID(t, []*x509.Certificate{idev2, beta.Intermediate}, "BETA-2"); !errors.Is(err, provision.ErrIDevIDInvalid) ||
		!strings.Contains(err.Error(), "several tenants") {
		t.Fatalf("manufacturer in two tenants: %v, want refused as ambiguous", err)
	}
	// Addressed to a tenant (an EST label): that tenant's CAs decide.
	res2, err := f.svc.Enroll(ctx, f.att, &provision.Request{PeerCerts: []*x509.Certificate{idev2}, Tenant: "other",
		CSRPEM: csrFor(t, "BETA-2", macFor("BETA-2")), SourceAddr: "192.0.2.81"})
	if err != nil {
		t.Fatalf("addressed to tenant other: %v", err)
	}
	if d, err := f.store.GetDevice(ctx, res2.DeviceID); err != nil || d.TenantID != f.other.ID {
		t.Fatalf("device = %+v, %v; want tenant other", d, err)
	}
}

func pemOf(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
