package provision_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// adminFixture is a registry with two tenants, an Admin over it, and an
// admin actor in each tenant.
type adminFixture struct {
	*fixture
	adm          *provision.Admin
	other        *registry.Tenant
	alice, oscar provision.Actor // admins of the default tenant and of other
}

func newAdminFixture(t *testing.T) *adminFixture {
	t.Helper()
	f := &adminFixture{fixture: newFixture(t)}
	var err error
	f.adm, err = provision.NewAdmin(provision.AdminConfig{
		Store: f.store, TrustDomain: pkitest.TrustDomain, Now: func() time.Time { return f.now },
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	f.other = &registry.Tenant{ID: "tenant-other", Name: "other"}
	if err := f.store.CreateTenant(context.Background(), f.other, &registry.AuditEvent{
		Actor: "system:test", Action: "tenant.create", Target: f.other.ID, Result: registry.ResultOK,
	}); err != nil {
		t.Fatal(err)
	}
	f.alice = provision.AdminActor("alice", registry.DefaultTenant, "192.0.2.1")
	f.oscar = provision.AdminActor("oscar", f.other.ID, "192.0.2.2")
	return f
}

// events returns the audit events after seq.
func (f *adminFixture) events(t *testing.T, seq int64) []*registry.AuditEvent {
	t.Helper()
	evs, err := f.store.ListAudit(context.Background(), seq, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func (f *adminFixture) head(t *testing.T) int64 {
	t.Helper()
	var last int64
	for {
		evs := f.events(t, last)
		if len(evs) == 0 {
			return last
		}
		last = evs[len(evs)-1].Seq
	}
}

// audited requires exactly one event after seq, of action by who with
// result on target.
func (f *adminFixture) audited(t *testing.T, seq int64, who provision.Actor, action provision.Action, target, result string) {
	t.Helper()
	evs := f.events(t, seq)
	if len(evs) != 1 || evs[0].Action != string(action) || evs[0].Actor != who.String() || evs[0].Result != result ||
		evs[0].Target != target || evs[0].SourceAddr != who.Source {
		var got []string
		for _, ev := range evs {
			got = append(got, ev.Actor+" "+ev.Action+" "+ev.Target+" "+ev.Result)
		}
		t.Errorf("audit after %d: %q, want one %s %s %s %s", seq, got, who, action, target, result)
	}
}

func TestInScope(t *testing.T) {
	alice := provision.AdminActor("alice", registry.DefaultTenant, "")
	oscar := provision.AdminActor("oscar", "t2", "")
	for _, tt := range []struct {
		who    provision.Actor
		tenant string
		want   bool
	}{
		{alice, registry.DefaultTenant, true},
		{alice, "", true}, // a record with no tenant is the default tenant's
		{alice, "t2", false},
		{oscar, "t2", true},
		{oscar, "", false},
		{oscar, registry.DefaultTenant, false},
		{provision.Actor{}, "", false}, // anonymous is in no tenant
		{provision.Actor{}, registry.DefaultTenant, false},
	} {
		if got := provision.InScope(tt.who, tt.tenant); got != tt.want {
			t.Errorf("InScope(%+v, %q) = %v, want %v", tt.who, tt.tenant, got, tt.want)
		}
	}
}

func TestAdminAuthenticate(t *testing.T) {
	f := newAdminFixture(t)
	ctx := context.Background()
	issue := func(tenant, name string, record bool, status registry.CertStatus) *x509.Certificate {
		t.Helper()
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		iss, err := f.ca.Issuer.IssueClient(ctx, &pki.ClientRequest{
			PublicKey: key.Public(), CommonName: name, URIs: []*url.URL{pki.AdminURI(pkitest.TrustDomain, tenant, name)},
		})
		if err != nil {
			t.Fatal(err)
		}
		if record {
			rec := provision.CertificateRecord(iss.Certificate, registry.KindAdmin, registry.DefaultTenant, "", time.Now())
			if status != "" {
				rec.Status = status
			}
			if err := f.store.RecordCertificate(ctx, rec, nil); err != nil {
				t.Fatal(err)
			}
		}
		return iss.Certificate
	}
	put := func(name, tenantID string, role registry.Role) {
		t.Helper()
		if err := f.store.PutAdmin(ctx, &registry.Admin{Name: name, TenantID: tenantID, Role: role}, nil); err != nil {
			t.Fatal(err)
		}
	}
	put("root", registry.DefaultTenant, registry.RoleAdmin)
	put("aud", registry.DefaultTenant, registry.RoleAuditor)
	put("olga", f.other.ID, registry.RoleAdmin)
	devKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	device := f.ca.IssueDevice(t, pki.Identity{DeviceID: "d-1", Tenant: registry.DefaultTenant, Serial: "SN-1"}, devKey).Certificate
	state := func(c *x509.Certificate) *tls.ConnectionState {
		return &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c}}}
	}
	const route = "POST /v1/admin/things"
	for _, tt := range []struct {
		name  string
		tls   *tls.ConnectionState
		roles []registry.Role
		want  error
		actor string
	}{
		{"no certificate", nil, []registry.Role{registry.RoleAdmin}, provision.ErrUnauthenticated, "anonymous"},
		{"no verified chain", &tls.ConnectionState{}, []registry.Role{registry.RoleAdmin}, provision.ErrUnauthenticated, "anonymous"},
		{"device certificate", state(device), []registry.Role{registry.RoleAdmin}, provision.ErrForbidden, "cert:" + device.SerialNumber.Text(16)},
		{"certificate not in the registry", state(issue("default", "root", false, "")), []registry.Role{registry.RoleAdmin}, provision.ErrForbidden, "admin:root"},
		{"revoked certificate", state(issue("default", "root", true, registry.CertRevoked)), []registry.Role{registry.RoleAdmin}, provision.ErrForbidden, "admin:root"},
		{"no such admin", state(issue("default", "nobody", true, "")), []registry.Role{registry.RoleAdmin}, provision.ErrForbidden, "admin:nobody"},
		{"certificate tenant is not the admin's", state(issue("default", "olga", true, "")), []registry.Role{registry.RoleAdmin}, provision.ErrForbidden, "admin:olga"},
		{"wrong role", state(issue("default", "aud", true, "")), []registry.Role{registry.RoleAdmin, registry.RoleOperator}, provision.ErrForbidden, "admin:aud"},
		{"no role allowed", state(issue("default", "root", true, "")), nil, provision.ErrForbidden, "admin:root"},
		{"admin", state(issue("default", "root", true, "")), []registry.Role{registry.RoleAdmin}, nil, "admin:root"},
		{"auditor reads", state(issue("default", "aud", true, "")), []registry.Role{registry.RoleAdmin, registry.RoleAuditor}, nil, "admin:aud"},
		{"admin of another tenant", state(issue("other", "olga", true, "")), []registry.Role{registry.RoleAdmin}, nil, "admin:olga"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			seq := f.head(t)
			hits := refusalHits(t, f.store, string(provision.ActionAdminDenied))
			who, err := f.adm.Authenticate(ctx, &provision.AuthRequest{TLS: tt.tls, Source: "192.0.2.7", Route: route, Roles: tt.roles})
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("Authenticate = %+v, %v; want %v", who, err, tt.want)
				}
				evs := f.events(t, seq)
				if tt.actor == "anonymous" {
					// Anonymous: counted in the refusal log, not chained.
					if n := refusalHits(t, f.store, string(provision.ActionAdminDenied)) - hits; n != 1 || len(evs) != 0 {
						t.Errorf("anonymous denial: %d refusals counted, %d chained events; want 1 and 0", n, len(evs))
					}
					return
				}
				if len(evs) != 1 || evs[0].Action != string(provision.ActionAdminDenied) || evs[0].Result != registry.ResultDenied ||
					evs[0].Actor != tt.actor || evs[0].Target != route || evs[0].SourceAddr != "192.0.2.7" {
					t.Errorf("denial audit %+v, want one admin.denied by %s", evs, tt.actor)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if who.Kind != provision.ActorAdmin || who.String() != tt.actor || who.Source != "192.0.2.7" || who.TenantID == "" {
				t.Errorf("actor %+v, want %s", who, tt.actor)
			}
			if evs := f.events(t, seq); len(evs) != 0 {
				t.Errorf("an admitted request wrote %d audit events", len(evs))
			}
		})
	}
	seq := f.head(t)
	f.adm.Read(ctx, f.alice, "/v1/admin/devices?limit=5")
	f.audited(t, seq, f.alice, provision.ActionAdminRead, "/v1/admin/devices?limit=5", registry.ResultOK)
}

func TestAdminMintToken(t *testing.T) {
	f := newAdminFixture(t)
	ctx := context.Background()

	seq := f.head(t)
	tok, rec, err := f.adm.MintToken(ctx, f.alice, provision.TokenSpec{Serial: "SN-T", Uses: 2})
	if err != nil {
		t.Fatal(err)
	}
	if rec.TenantID != registry.DefaultTenant || rec.CreatedBy != "admin:alice" || rec.UsesLeft != 2 || rec.Serial != "SN-T" {
		t.Errorf("token %+v", rec)
	}
	if st, err := f.store.GetToken(ctx, provision.HashToken(tok)); err != nil || st.ID != rec.ID {
		t.Errorf("stored token %+v, %v", st, err)
	}
	f.audited(t, seq, f.alice, provision.ActionTokenCreate, rec.ID, registry.ResultOK)

	// A super-admin mints in any tenant.
	super := f.alice
	super.Super = true
	if _, rec, err := f.adm.MintToken(ctx, super, provision.TokenSpec{Tenant: "other"}); err != nil || rec.TenantID != f.other.ID {
		t.Errorf("super-admin in another tenant: %+v, %v", rec, err)
	}

	// Oscar mints in his own tenant, by name.
	if _, rec, err := f.adm.MintToken(ctx, f.oscar, provision.TokenSpec{Tenant: "other"}); err != nil || rec.TenantID != f.other.ID {
		t.Errorf("oscar in his tenant: %+v, %v", rec, err)
	}

	for _, tt := range []struct {
		name string
		who  provision.Actor
		spec provision.TokenSpec
		want error
	}{
		{"another tenant", f.alice, provision.TokenSpec{Tenant: "other"}, registry.ErrNotFound},
		{"the default tenant from another", f.oscar, provision.TokenSpec{}, registry.ErrNotFound},
		{"unknown tenant", f.alice, provision.TokenSpec{Tenant: "nope"}, registry.ErrNotFound},
		{"bad uses", f.alice, provision.TokenSpec{Uses: -1}, provision.ErrInvalidArgument},
		{"bad ttl", f.alice, provision.TokenSpec{TTL: 9000 * time.Hour}, provision.ErrInvalidArgument},
		{"bad serial", f.alice, provision.TokenSpec{Serial: "has space"}, provision.ErrInvalidArgument},
	} {
		t.Run(tt.name, func(t *testing.T) {
			seq := f.head(t)
			if _, _, err := f.adm.MintToken(ctx, tt.who, tt.spec); !errors.Is(err, tt.want) {
				t.Fatalf("MintToken = %v, want %v", err, tt.want)
			}
			target := tt.spec.Tenant
			if target == "" {
				target = registry.DefaultTenant
			}
			// Only the refusal is written: no token.
			f.audited(t, seq, tt.who, provision.ActionTokenCreate, target, registry.ResultDenied)
		})
	}
}

// selfSigned makes a certificate PEM signed by its own key; ca sets
// basicConstraints CA.
func selfSigned(t *testing.T, ca bool) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "TPM Maker Root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: ca, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestAdminAddTPMRoot(t *testing.T) {
	f := newAdminFixture(t)
	ctx := context.Background()
	good := selfSigned(t, true)
	// Not self-signed: the test CA's intermediate, signed by its root.
	inter := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.ca.CA.Intermediate.Raw})
	// A CA that names itself as its issuer but was signed by another key.
	impostor := func() []byte {
		k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tpl := &x509.Certificate{
			SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "TPM Maker Root"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		}
		der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, k1.Public(), k2)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}()
	// A TPM root is trusted for every tenant: a tenant admin may not add
	// one, a super-admin may.
	seq0 := f.head(t)
	if _, err := f.adm.AddTPMRoot(ctx, f.alice, good); !errors.Is(err, provision.ErrForbidden) {
		t.Fatalf("AddTPMRoot by a tenant admin = %v, want ErrForbidden", err)
	}
	f.audited(t, seq0, f.alice, provision.ActionTPMRootAdd, "", registry.ResultDenied)
	f.alice.Super = true
	for _, tt := range []struct {
		name string
		pem  []byte
	}{
		{"empty", nil},
		{"garbage", []byte("not a PEM")},
		{"two blocks", append(append([]byte{}, good...), good...)},
		{"a key", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}})},
		{"unparsable", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}})},
		{"not a CA", selfSigned(t, false)},
		{"issuer is itself, signature is not", impostor},
	} {
		t.Run(tt.name, func(t *testing.T) {
			seq := f.head(t)
			if _, err := f.adm.AddTPMRoot(ctx, f.alice, tt.pem); !errors.Is(err, provision.ErrInvalidArgument) {
				t.Fatalf("AddTPMRoot = %v, want ErrInvalidArgument", err)
			}
			if roots, _ := f.store.ListTPMRoots(ctx); len(roots) != 0 {
				t.Errorf("%d roots after a refusal", len(roots))
			}
			f.audited(t, seq, f.alice, provision.ActionTPMRootAdd, "", registry.ResultDenied)
		})
	}

	seq := f.head(t)
	root, err := f.adm.AddTPMRoot(ctx, f.alice, good)
	if err != nil {
		t.Fatal(err)
	}
	if root.AddedBy != "admin:alice" || root.Subject != "CN=TPM Maker Root" || len(root.Fingerprint) != 64 {
		t.Errorf("root %+v", root)
	}
	f.audited(t, seq, f.alice, provision.ActionTPMRootAdd, root.Fingerprint, registry.ResultOK)
	seq = f.head(t)
	f.oscar.Super = true
	if _, err := f.adm.AddTPMRoot(ctx, f.oscar, good); !errors.Is(err, registry.ErrAlreadyExists) {
		t.Fatalf("second AddTPMRoot = %v, want ErrAlreadyExists", err)
	}
	f.audited(t, seq, f.oscar, provision.ActionTPMRootAdd, root.Fingerprint, registry.ResultDenied)
	if roots, _ := f.store.ListTPMRoots(ctx); len(roots) != 1 || roots[0].Kind != registry.TPMRootCA {
		t.Errorf("roots %+v, want 1 root", roots)
	}

	// A CA certificate that is not self-signed is kept as an intermediate.
	seq = f.head(t)
	in, err := f.adm.AddTPMRoot(ctx, f.alice, inter)
	if err != nil {
		t.Fatal(err)
	}
	if in.Kind != registry.TPMIntermediate || in.Fingerprint != pki.Fingerprint(f.ca.CA.Intermediate) {
		t.Errorf("intermediate %+v", in)
	}
	f.audited(t, seq, f.alice, provision.ActionTPMRootAdd, in.Fingerprint, registry.ResultOK)
	if evs := f.events(t, seq); len(evs) != 1 || !strings.HasPrefix(evs[0].Detail, "intermediate ") {
		t.Errorf("audit detail of the intermediate: %+v", evs)
	}
	if roots, _ := f.store.ListTPMRoots(ctx); len(roots) != 2 || roots[1].Kind != registry.TPMIntermediate {
		t.Errorf("after the intermediate: %+v", roots)
	}
	// ParseTPMRoot (a root only) still refuses it.
	if _, err := provision.ParseTPMRoot(inter); !errors.Is(err, provision.ErrInvalidArgument) {
		t.Errorf("ParseTPMRoot(intermediate) = %v, want ErrInvalidArgument", err)
	}
}

func TestAdminPreregister(t *testing.T) {
	f := newAdminFixture(t)
	ctx := context.Background()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(rsaKey.Public())
	ekPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKIXPublicKey(ecKey.Public())
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallDER, _ := x509.MarshalPKIXPublicKey(small.Public())

	for _, tt := range []struct {
		name string
		spec provision.PreregisterSpec
	}{
		{"bad serial", provision.PreregisterSpec{Serial: "has space", EKPub: ekPEM}},
		{"no serial", provision.PreregisterSpec{EKPub: ekPEM}},
		{"bad mac", provision.PreregisterSpec{Serial: "SN-P", MACs: []string{"zz"}, EKPub: ekPEM}},
		{"no ek", provision.PreregisterSpec{Serial: "SN-P"}},
		{"garbage ek", provision.PreregisterSpec{Serial: "SN-P", EKPub: "%%%"}},
		{"ECDSA ek", provision.PreregisterSpec{Serial: "SN-P", EKPub: base64.StdEncoding.EncodeToString(ecDER)}},
		{"RSA-1024 ek", provision.PreregisterSpec{Serial: "SN-P", EKPub: base64.StdEncoding.EncodeToString(smallDER)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			seq := f.head(t)
			if _, err := f.adm.Preregister(ctx, f.alice, tt.spec); !errors.Is(err, provision.ErrInvalidArgument) {
				t.Fatalf("Preregister = %v, want ErrInvalidArgument", err)
			}
			f.audited(t, seq, f.alice, provision.ActionTPMPreregister, tt.spec.Serial, registry.ResultDenied)
		})
	}

	seq := f.head(t)
	p, err := f.adm.Preregister(ctx, f.oscar, provision.PreregisterSpec{Serial: "SN-P", MACs: []string{"02:00:00:00:00:AA"}, EKPub: ekPEM})
	if err != nil {
		t.Fatal(err)
	}
	if p.TenantID != f.other.ID || p.CreatedBy != "admin:oscar" || len(p.MACs) != 1 || p.MACs[0] != "0200000000aa" {
		t.Errorf("pre-registration %+v: want it in oscar's tenant with the MAC normalized", p)
	}
	f.audited(t, seq, f.oscar, provision.ActionTPMPreregister, "SN-P", registry.ResultOK)
	if got, err := f.store.GetPreregistration(ctx, p.EKHash); err != nil || got.TenantID != f.other.ID || got.Serial != "SN-P" {
		t.Errorf("stored %+v, %v", got, err)
	}
	// The same EK again, even as base64 DER and from another tenant.
	if _, err := f.adm.Preregister(ctx, f.alice, provision.PreregisterSpec{Serial: "SN-Q", EKPub: base64.StdEncoding.EncodeToString(der)}); !errors.Is(err, registry.ErrAlreadyExists) {
		t.Fatalf("second Preregister = %v, want ErrAlreadyExists", err)
	}
	if got, _ := f.store.GetPreregistration(ctx, p.EKHash); got.Serial != "SN-P" || got.TenantID != f.other.ID {
		t.Errorf("pre-registration changed by a refusal: %+v", got)
	}
}

func TestAdminRotateDevice(t *testing.T) {
	f := newAdminFixture(t)
	ctx := context.Background()
	res, err := f.enroll(t, f.mint(t, provision.TokenSpec{}), "SN-ROT", "02:00:00:00:00:01")
	if err != nil {
		t.Fatal(err)
	}
	id := res.DeviceID
	past := f.now.Add(-time.Minute)
	for _, tt := range []struct {
		name     string
		who      provision.Actor
		id       string
		deadline *time.Time
		want     error
	}{
		{"unknown device", f.alice, "nope", nil, registry.ErrNotFound},
		{"another tenant's device", f.oscar, id, nil, registry.ErrNotFound},
		{"deadline in the past", f.alice, id, &past, provision.ErrInvalidArgument},
	} {
		t.Run(tt.name, func(t *testing.T) {
			seq := f.head(t)
			if _, err := f.adm.RotateDevice(ctx, tt.who, tt.id, tt.deadline); !errors.Is(err, tt.want) {
				t.Fatalf("RotateDevice = %v, want %v", err, tt.want)
			}
			if d, _ := f.store.GetDevice(ctx, id); d.RekeyRequired || d.RekeyDeadline != nil {
				t.Errorf("device changed by a refusal: %+v", d)
			}
			f.audited(t, seq, tt.who, provision.ActionDeviceRotate, tt.id, registry.ResultDenied)
		})
	}
	deadline := f.now.Add(72 * time.Hour).UTC().Truncate(time.Second)
	seq := f.head(t)
	d, err := f.adm.RotateDevice(ctx, f.alice, id, &deadline)
	if err != nil {
		t.Fatal(err)
	}
	if !d.RekeyRequired || d.RekeyDeadline == nil || !d.RekeyDeadline.Equal(deadline) {
		t.Errorf("device after rotate: %+v", d)
	}
	f.audited(t, seq, f.alice, provision.ActionDeviceRotate, id, registry.ResultOK)
}

func TestAdminReinstateDevice(t *testing.T) {
	f := newAdminFixture(t)
	ctx := context.Background()
	res, err := f.enroll(t, f.mint(t, provision.TokenSpec{}), "SN-REIN", "02:00:00:00:00:01")
	if err != nil {
		t.Fatal(err)
	}
	id, certSerial := res.DeviceID, res.Certificate.SerialNumber.Text(16)

	seq := f.head(t)
	if _, err := f.adm.ReinstateDevice(ctx, f.alice, id); !errors.Is(err, registry.ErrNotRevoked) {
		t.Fatalf("ReinstateDevice(active) = %v, want ErrNotRevoked", err)
	}
	f.audited(t, seq, f.alice, provision.ActionDeviceReinstate, id, registry.ResultDenied)

	if _, err := f.store.RevokeDevice(ctx, id, registry.ReasonKeyCompromise, &registry.AuditEvent{
		TenantID: registry.DefaultTenant, Actor: "admin:alice", Action: "device.revoke", Target: id, Result: registry.ResultOK,
	}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		who  provision.Actor
		id   string
	}{
		{"unknown device", f.alice, "nope"},
		{"another tenant's device", f.oscar, id},
	} {
		t.Run(tt.name, func(t *testing.T) {
			seq := f.head(t)
			if _, err := f.adm.ReinstateDevice(ctx, tt.who, tt.id); !errors.Is(err, registry.ErrNotFound) {
				t.Fatalf("ReinstateDevice = %v, want ErrNotFound", err)
			}
			if d, _ := f.store.GetDevice(ctx, id); d.Status != registry.DeviceRevoked {
				t.Errorf("device changed by a refusal: %+v", d)
			}
			f.audited(t, seq, tt.who, provision.ActionDeviceReinstate, tt.id, registry.ResultDenied)
		})
	}

	seq = f.head(t)
	d, err := f.adm.ReinstateDevice(ctx, f.alice, id)
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != id || d.Status != registry.DeviceActive {
		t.Errorf("device after reinstate: %+v", d)
	}
	f.audited(t, seq, f.alice, provision.ActionDeviceReinstate, id, registry.ResultOK)
	if c, err := f.store.GetCertificate(ctx, certSerial); err != nil || c.Status != registry.CertRevoked {
		t.Errorf("certificate after reinstate: %+v, %v; want still revoked", c, err)
	}
	// A token bound to the serial re-enrolls it under the same id.
	again, err := f.enroll(t, f.mint(t, provision.TokenSpec{Serial: "SN-REIN"}), "SN-REIN", "02:00:00:00:00:01")
	if err != nil || again.DeviceID != id {
		t.Fatalf("re-enroll after reinstate: %+v, %v; want device %s", again, err, id)
	}
}

func TestAdminDismissQuarantine(t *testing.T) {
	f := newAdminFixture(t)
	ctx := context.Background()
	q := &registry.Quarantine{
		ID: "q-1", TenantID: registry.DefaultTenant, Serial: "SN-Q", EKHash: strings.Repeat("ab", 32),
		Reason: registry.ReasonSerialOtherEK, SourceAddr: "198.51.100.1",
	}
	if err := f.store.HoldClaim(ctx, q, &registry.AuditEvent{
		TenantID: registry.DefaultTenant, Actor: "anonymous", Action: "enroll.clone-suspect", Result: registry.ResultDenied,
	}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		who  provision.Actor
		id   string
	}{
		{"unknown claim", f.alice, "nope"},
		{"another tenant's claim", f.oscar, "q-1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			seq := f.head(t)
			if _, err := f.adm.DismissQuarantine(ctx, tt.who, tt.id); !errors.Is(err, registry.ErrNotFound) {
				t.Fatalf("DismissQuarantine = %v, want ErrNotFound", err)
			}
			if got, _ := f.store.GetQuarantine(ctx, "q-1"); got.Status != registry.QuarantineHeld {
				t.Errorf("claim changed by a refusal: %+v", got)
			}
			f.audited(t, seq, tt.who, provision.ActionQuarantineDismiss, tt.id, registry.ResultDenied)
		})
	}
	seq := f.head(t)
	d, err := f.adm.DismissQuarantine(ctx, f.alice, "q-1")
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != registry.QuarantineDismissed || d.DismissedBy != "admin:alice" {
		t.Errorf("claim after dismissal: %+v", d)
	}
	f.audited(t, seq, f.alice, provision.ActionQuarantineDismiss, "q-1", registry.ResultOK)
	seq = f.head(t)
	_, err = f.adm.DismissQuarantine(ctx, f.alice, "q-1")
	if !errors.Is(err, registry.ErrClaimNotHeld) || !strings.Contains(err.Error(), "dismissed by admin:alice") {
		t.Fatalf("second DismissQuarantine = %v, want ErrClaimNotHeld saying who dismissed it", err)
	}
	f.audited(t, seq, f.alice, provision.ActionQuarantineDismiss, "q-1", registry.ResultDenied)
}
