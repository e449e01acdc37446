// Package storetest is the conformance suite every registry.Store passes.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) registry.Store { return openFresh(t) })
//	}
package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// Run runs the suite. open must return a fresh store holding only what a
// newly opened store holds (the default tenant), whose clock is close to
// the real time; Run closes it when the subtest ends (Close must tolerate a
// second call if open also registers one).
func Run(t *testing.T, open func(t *testing.T) registry.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s registry.Store)
	}{
		{"DefaultTenant", testDefaultTenant},
		{"Tenants", testTenants},
		{"Tokens", testTokens},
		{"NotFound", testNotFound},
		{"Admins", testAdmins},
		{"RecordCertificate", testRecordCertificate},
		{"EnrollHappyPath", testEnrollHappyPath},
		{"EnrollWithoutToken", testEnrollWithoutToken},
		{"EnrollTokenFailures", testEnrollTokenFailures},
		{"ReEnroll", testReEnroll},
		{"ReEnrollSameEK", testReEnrollSameEK},
		{"DeviceAKPub", testDeviceAKPub},
		{"Preregistration", testPreregistration},
		{"UniqueTenantSerial", testUniqueTenantSerial},
		{"MACUnique", testMACUnique},
		{"SingleUseTokenRace", testSingleUseTokenRace},
		{"MultiUseTokenRace", testMultiUseTokenRace},
		{"MixedConcurrentBatch", testMixedBatch},
		{"CancelledContext", testCancelledContext},
		{"Audit", testAudit},
		{"ListAuditPaging", testListAuditPaging},
		{"Refusals", testRefusals},
		{"TenantChains", testTenantChains},
		{"PruneAudit", testPruneAudit},
		{"RevokeCertificate", testRevokeCertificate},
		{"RevokeInvalidReason", testRevokeInvalidReason},
		{"RevokeDevice", testRevokeDevice},
		{"ReinstateDevice", testReinstateDevice},
		{"RevokedExpiry", testRevokedExpiry},
		{"NextCRLNumber", testNextCRLNumber},
		{"CRLPartitions", testCRLPartitions},
		{"PartitionCRLNumbers", testPartitionCRLNumbers},
		{"EachRevoked", testEachRevoked},
		{"Renew", testRenew},
		{"RenewNamedDevice", testRenewNamedDevice},
		{"RenewRekeyRequired", testRenewRekeyRequired},
		{"RenewRevoked", testRenewRevoked},
		{"CertificateAndDevice", testCertificateAndDevice},
		{"CertificateKeyAndToken", testCertificateKeyAndToken},
		{"ListDevices", testListDevices},
		{"ListCertificates", testListCertificates},
		{"TPMRoots", testTPMRoots},
		{"IDevIDCAs", testIDevIDCAs},
		{"DeviceIDevID", testDeviceIDevID},
		{"Quarantine", testQuarantine},
		{"EKUnique", testEKUnique},
		{"ApplyRelease", testApplyRelease},
		{"TenantPolicy", testTenantPolicy},
		{"TenantPolicyFields", testTenantPolicyFields},
		{"AdminLifecycle", testAdminLifecycle},
		{"ReEnrollSameEKWithToken", testReEnrollSameEKWithToken},
		{"TPMChallenge", testTPMChallenge},
		{"TPMChallengeUnknown", testTPMChallengeUnknown},
		{"TPMChallengeExpired", testTPMChallengeExpired},
		{"TPMChallengeSingleUse", testTPMChallengeSingleUse},
		{"TPMChallengeSweep", testTPMChallengeSweep},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			if err := s.Ping(context.Background()); err != nil {
				t.Fatalf("Ping: %v", err)
			}
			tc.fn(t, s)
		})
	}
}

func testDefaultTenant(t *testing.T, s registry.Store) {
	tn, err := s.GetTenant(context.Background(), registry.DefaultTenant)
	if err != nil {
		t.Fatalf("GetTenant(default): %v", err)
	}
	if tn.Name != registry.DefaultTenant || tn.ID == "" {
		t.Fatalf("default tenant = %+v", tn)
	}
	byID, err := s.GetTenantByID(context.Background(), tn.ID)
	if err != nil || byID.Name != tn.Name {
		t.Fatalf("GetTenantByID(%q) = %+v, %v", tn.ID, byID, err)
	}
}

func testTenants(t *testing.T, s registry.Store) {
	ctx := context.Background()
	tn := mkTenant(t, s, "acme")
	got, err := s.GetTenant(ctx, "acme")
	if err != nil {
		t.Fatalf("GetTenant: %v", err)
	}
	if got.ID != tn.ID || got.Name != "acme" || got.CreatedAt.IsZero() {
		t.Errorf("GetTenant = %+v, want id %q and a creation time", got, tn.ID)
	}
	dup := &registry.Tenant{ID: "t-other", Name: "acme"}
	if err := s.CreateTenant(ctx, dup, nil); !errors.Is(err, registry.ErrAlreadyExists) {
		t.Errorf("CreateTenant(duplicate name) = %v, want ErrAlreadyExists", err)
	}
}

func testTokens(t *testing.T, s registry.Store) {
	ctx := context.Background()
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	tok := mkToken(t, s, registry.DefaultTenant, "SN1", 3, exp)
	got, err := s.GetToken(ctx, tok.Hash)
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	if got.ID != tok.ID || !bytes.Equal(got.Hash, tok.Hash) || got.TenantID != tok.TenantID ||
		got.Serial != "SN1" || got.UsesLeft != 3 || !got.ExpiresAt.Equal(exp) || got.CreatedBy != tok.CreatedBy {
		t.Errorf("GetToken = %+v, want %+v", got, tok)
	}
	dup := *tok
	dup.ID = "tok-dup"
	if err := s.CreateToken(ctx, &dup, nil); !errors.Is(err, registry.ErrAlreadyExists) {
		t.Errorf("CreateToken(duplicate hash) = %v, want ErrAlreadyExists", err)
	}
}

func testNotFound(t *testing.T, s registry.Store) {
	ctx := context.Background()
	missing := sha256.Sum256([]byte("missing"))
	for _, tc := range []struct {
		name string
		fn   func() error
	}{
		{"GetTenant", func() error { _, err := s.GetTenant(ctx, "nope"); return err }},
		{"GetTenantByID", func() error { _, err := s.GetTenantByID(ctx, "nope"); return err }},
		{"GetToken", func() error { _, err := s.GetToken(ctx, missing[:]); return err }},
		{"GetDevice", func() error { _, err := s.GetDevice(ctx, "nope"); return err }},
		{"GetDeviceBySerial", func() error { _, err := s.GetDeviceBySerial(ctx, registry.DefaultTenant, "nope"); return err }},
		{"GetCertificate", func() error { _, err := s.GetCertificate(ctx, "abcdef"); return err }},
		{"GetAdmin", func() error { _, err := s.GetAdmin(ctx, "nope"); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.fn(); !errors.Is(err, registry.ErrNotFound) {
				t.Errorf("err = %v, want ErrNotFound", err)
			}
		})
	}
	certs, err := s.ListDeviceCertificates(ctx, "nope")
	if err != nil || len(certs) != 0 {
		t.Errorf("ListDeviceCertificates(missing) = %d certs, %v; want none", len(certs), err)
	}
}

func testAdmins(t *testing.T, s registry.Store) {
	ctx := context.Background()
	a := &registry.Admin{Name: "alice", TenantID: registry.DefaultTenant, Role: registry.RoleOperator}
	ev := &registry.AuditEvent{Actor: "system", Action: "admin.put", Target: "alice", Result: registry.ResultOK}
	if err := s.PutAdmin(ctx, a, ev); err != nil {
		t.Fatalf("PutAdmin: %v", err)
	}
	if ev.Seq == 0 || len(ev.Hash) != sha256.Size {
		t.Errorf("PutAdmin did not fill the audit event: %+v", ev)
	}
	got, err := s.GetAdmin(ctx, "alice")
	if err != nil || got.Role != registry.RoleOperator || got.TenantID != registry.DefaultTenant {
		t.Fatalf("GetAdmin = %+v, %v", got, err)
	}
	a.Role = registry.RoleAdmin
	if err := s.PutAdmin(ctx, a, nil); err != nil {
		t.Fatalf("PutAdmin(update): %v", err)
	}
	if got, err := s.GetAdmin(ctx, "alice"); err != nil || got.Role != registry.RoleAdmin {
		t.Fatalf("GetAdmin after update = %+v, %v; want role admin", got, err)
	}
	verify(t, s)
}

func testRecordCertificate(t *testing.T, s registry.Store) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	c := &registry.Certificate{
		Serial: randHex(t, 20), Kind: registry.KindAdmin, Subject: "CN=alice", SANs: []string{"urn:a", "urn:b"},
		NotBefore: now, NotAfter: now.Add(time.Hour), DER: []byte{1, 2, 3}, Status: registry.CertActive,
	}
	if err := s.RecordCertificate(ctx, c, &registry.AuditEvent{Actor: "system", Action: "cert.issue", Target: c.Serial}); err != nil {
		t.Fatalf("RecordCertificate: %v", err)
	}
	got, err := s.GetCertificate(ctx, c.Serial)
	if err != nil {
		t.Fatalf("GetCertificate: %v", err)
	}
	if got.Kind != registry.KindAdmin || got.DeviceID != "" || !bytes.Equal(got.DER, c.DER) ||
		len(got.SANs) != 2 || got.SANs[1] != "urn:b" || !got.NotAfter.Equal(c.NotAfter) || got.RevokedAt != nil {
		t.Errorf("GetCertificate = %+v, want %+v", got, c)
	}
	if err := s.RecordCertificate(ctx, c, nil); !errors.Is(err, registry.ErrAlreadyExists) {
		t.Errorf("RecordCertificate(duplicate) = %v, want ErrAlreadyExists", err)
	}
}

func testEnrollHappyPath(t *testing.T, s registry.Store) {
	ctx := context.Background()
	tok := mkToken(t, s, registry.DefaultTenant, "", 2, future())
	_, before := auditHead(t, s)
	e := newEnrollment(t, registry.DefaultTenant, "SN-HAPPY", tok.Hash)
	if err := s.Enroll(ctx, e); err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	dev, err := s.GetDeviceBySerial(ctx, registry.DefaultTenant, "SN-HAPPY")
	if err != nil {
		t.Fatalf("GetDeviceBySerial: %v", err)
	}
	if dev.ID != e.Device.ID || dev.Status != registry.DeviceActive || len(dev.MACs) != 1 || dev.MACs[0] != e.Device.MACs[0] || dev.Method != "token" {
		t.Errorf("device = %+v, want %+v", dev, e.Device)
	}
	if byID, err := s.GetDevice(ctx, e.Device.ID); err != nil || byID.Serial != "SN-HAPPY" {
		t.Errorf("GetDevice = %+v, %v", byID, err)
	}
	cert, err := s.GetCertificate(ctx, e.Certificate.Serial)
	if err != nil {
		t.Fatalf("GetCertificate: %v", err)
	}
	if cert.DeviceID != dev.ID || cert.Status != registry.CertActive || cert.Kind != registry.KindDevice {
		t.Errorf("certificate = %+v", cert)
	}
	certs, err := s.ListDeviceCertificates(ctx, dev.ID)
	if err != nil || len(certs) != 1 || certs[0].Serial != e.Certificate.Serial {
		t.Errorf("ListDeviceCertificates = %v, %v; want the one certificate", certs, err)
	}
	if got := usesLeft(t, s, tok.Hash); got != 1 {
		t.Errorf("token uses left = %d, want 1", got)
	}
	if e.Audit.Seq != before+1 || len(e.Audit.Hash) != sha256.Size || e.Audit.Time.IsZero() {
		t.Errorf("audit event not filled: %+v (previous seq %d)", e.Audit, before)
	}
	evs, err := s.ListAudit(ctx, before, 10)
	if err != nil || len(evs) != 1 || evs[0].Action != "enroll" || evs[0].Target != dev.ID || !bytes.Equal(evs[0].Hash, e.Audit.Hash) {
		t.Fatalf("ListAudit after enroll = %v, %v", evs, err)
	}
	verify(t, s)
}

func testEnrollWithoutToken(t *testing.T, s registry.Store) {
	ctx := context.Background()
	e := newEnrollment(t, registry.DefaultTenant, "SN-TPM", nil)
	e.Device.Method = "tpm"
	if err := s.Enroll(ctx, e); err != nil {
		t.Fatalf("Enroll without token: %v", err)
	}
	// Without a token bound to the serial, the serial cannot enroll again.
	again := newEnrollment(t, registry.DefaultTenant, "SN-TPM", nil)
	before := takeSnapshot(t, s, again, nil)
	if err := s.Enroll(ctx, again); !errors.Is(err, registry.ErrSerialConflict) {
		t.Fatalf("second Enroll without token = %v, want ErrSerialConflict", err)
	}
	requireUnchanged(t, s, again, nil, before)
}

func testEnrollTokenFailures(t *testing.T, s registry.Store) {
	ctx := context.Background()
	other := mkTenant(t, s, "other")
	spent := mkToken(t, s, registry.DefaultTenant, "", 1, future())
	if err := s.Enroll(ctx, newEnrollment(t, registry.DefaultTenant, "SN-SPENDER", spent.Hash)); err != nil {
		t.Fatalf("Enroll to spend the token: %v", err)
	}
	unknown := sha256.Sum256([]byte("never minted"))
	for _, tc := range []struct {
		name   string
		tenant string
		hash   []byte
		want   error
	}{
		{"unknown", registry.DefaultTenant, unknown[:], registry.ErrTokenInvalid},
		{"expired", registry.DefaultTenant, mkToken(t, s, registry.DefaultTenant, "", 1, time.Now().Add(-time.Minute)).Hash, registry.ErrTokenExpired},
		{"spent", registry.DefaultTenant, spent.Hash, registry.ErrTokenSpent},
		// A zero expiry is expired (registry.Token.Spendable): fail closed.
		{"zero expiry", registry.DefaultTenant, mkToken(t, s, registry.DefaultTenant, "", 1, time.Time{}).Hash, registry.ErrTokenExpired},
		{"no uses", registry.DefaultTenant, mkToken(t, s, registry.DefaultTenant, "", 0, future()).Hash, registry.ErrTokenSpent},
		{"wrong tenant", registry.DefaultTenant, mkToken(t, s, other.ID, "", 1, future()).Hash, registry.ErrTokenTenantMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnrollment(t, tc.tenant, "SN-FAIL", tc.hash)
			before := takeSnapshot(t, s, e, tc.hash)
			if err := s.Enroll(ctx, e); !errors.Is(err, tc.want) {
				t.Fatalf("Enroll = %v, want %v", err, tc.want)
			}
			requireUnchanged(t, s, e, tc.hash, before)
			if before.devErr == nil {
				t.Fatal("device existed before the refused enrollment")
			}
		})
	}
	verify(t, s)
}

func testReEnroll(t *testing.T, s registry.Store) {
	ctx := context.Background()
	const serial = "SN-RE"
	first := mkToken(t, s, registry.DefaultTenant, "", 1, future())
	e1 := newEnrollment(t, registry.DefaultTenant, serial, first.Hash)
	if err := s.Enroll(ctx, e1); err != nil {
		t.Fatalf("first Enroll: %v", err)
	}
	dev1, err := s.GetDeviceBySerial(ctx, registry.DefaultTenant, serial)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("not a re-enrollment", func(t *testing.T) {
		tok := mkToken(t, s, registry.DefaultTenant, serial, 1, future())
		e := newEnrollment(t, registry.DefaultTenant, serial, tok.Hash)
		before := takeSnapshot(t, s, e, tok.Hash)
		if err := s.Enroll(ctx, e); !errors.Is(err, registry.ErrSerialConflict) {
			t.Fatalf("Enroll = %v, want ErrSerialConflict", err)
		}
		requireUnchanged(t, s, e, tok.Hash, before)
	})

	t.Run("device id mismatch", func(t *testing.T) {
		tok := mkToken(t, s, registry.DefaultTenant, serial, 1, future())
		e := newEnrollment(t, registry.DefaultTenant, serial, tok.Hash)
		e.Device.ID = "dev-impostor"
		e.Certificate.DeviceID = e.Device.ID
		before := takeSnapshot(t, s, e, tok.Hash)
		if err := s.Enroll(ctx, e); !errors.Is(err, registry.ErrSerialConflict) {
			t.Fatalf("Enroll = %v, want ErrSerialConflict", err)
		}
		requireUnchanged(t, s, e, tok.Hash, before)
		// Naming the device it re-enrolls does not let another id in.
		e.Replace = dev1
		if err := s.Enroll(ctx, e); err == nil {
			t.Fatal("re-enrollment of the device under another id succeeded")
		}
		requireUnchanged(t, s, e, tok.Hash, before)
		if _, err := s.GetDevice(ctx, "dev-impostor"); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("GetDevice(impostor) = %v, want ErrNotFound", err)
		}
	})

	t.Run("stale expectation", func(t *testing.T) {
		tok := mkToken(t, s, registry.DefaultTenant, serial, 1, future())
		e := reenrolling(t, s, newEnrollment(t, registry.DefaultTenant, serial, tok.Hash))
		e.Replace.Status = registry.DeviceRevoked
		before := takeSnapshot(t, s, e, tok.Hash)
		if err := s.Enroll(ctx, e); !errors.Is(err, registry.ErrConflict) {
			t.Fatalf("Enroll = %v, want ErrConflict", err)
		}
		requireUnchanged(t, s, e, tok.Hash, before)
	})

	t.Run("re-enrollment", func(t *testing.T) {
		// Give the device a second, superseded certificate: both must be revoked.
		e2 := reenrolling(t, s, newEnrollment(t, registry.DefaultTenant, serial, mkToken(t, s, registry.DefaultTenant, serial, 1, future()).Hash))
		if err := s.Enroll(ctx, e2); err != nil {
			t.Fatalf("re-Enroll with bound token: %v", err)
		}
		tok := mkToken(t, s, registry.DefaultTenant, serial, 1, future())
		// Presented in another case: the same device, its serial as presented.
		e3 := reenrolling(t, s, newEnrollment(t, registry.DefaultTenant, "sn-re", tok.Hash))
		e3.Device.MACs = []string{"0200000000aa", "0200000000bb"}
		e3.Device.Method = "token-rebind"
		if err := s.Enroll(ctx, e3); err != nil {
			t.Fatalf("second re-Enroll: %v", err)
		}
		dev, err := s.GetDeviceBySerial(ctx, registry.DefaultTenant, serial)
		if err != nil {
			t.Fatal(err)
		}
		if dev.ID != dev1.ID || dev.Serial != "sn-re" {
			t.Errorf("device id %q -> %q, serial %q; want the same id, serial as last presented", dev1.ID, dev.ID, dev.Serial)
		}
		if len(dev.MACs) != 2 || dev.MACs[1] != "0200000000bb" || dev.Method != "token-rebind" || dev.Status != registry.DeviceActive {
			t.Errorf("device not updated: %+v", dev)
		}
		if !dev.CreatedAt.Equal(dev1.CreatedAt) {
			t.Errorf("CreatedAt changed: %v -> %v", dev1.CreatedAt, dev.CreatedAt)
		}
		if got := usesLeft(t, s, tok.Hash); got != 0 {
			t.Errorf("bound token uses left = %d, want 0", got)
		}
		certs, err := s.ListDeviceCertificates(ctx, dev.ID)
		if err != nil || len(certs) != 3 {
			t.Fatalf("ListDeviceCertificates = %d, %v; want 3", len(certs), err)
		}
		for _, c := range certs {
			switch c.Serial {
			case e3.Certificate.Serial:
				if c.Status != registry.CertActive || c.RevokedAt != nil {
					t.Errorf("new certificate %s: status %s revokedAt %v", c.Serial, c.Status, c.RevokedAt)
				}
			case e1.Certificate.Serial, e2.Certificate.Serial:
				if c.Status != registry.CertRevoked || c.RevocationReason != registry.ReasonSuperseded || c.RevokedAt == nil {
					t.Errorf("old certificate %s: status %s reason %d revokedAt %v; want revoked/superseded",
						c.Serial, c.Status, c.RevocationReason, c.RevokedAt)
				}
			default:
				t.Errorf("unexpected certificate %s", c.Serial)
			}
		}
	})
	verify(t, s)
}

func testUniqueTenantSerial(t *testing.T, s registry.Store) {
	ctx := context.Background()
	other := mkTenant(t, s, "second")
	for _, tenant := range []string{registry.DefaultTenant, other.ID} {
		if err := s.Enroll(ctx, newEnrollment(t, tenant, "SN-SAME", nil)); err != nil {
			t.Fatalf("Enroll(%s/SN-SAME): %v", tenant, err)
		}
	}
	a, errA := s.GetDeviceBySerial(ctx, registry.DefaultTenant, "SN-SAME")
	b, errB := s.GetDeviceBySerial(ctx, other.ID, "SN-SAME")
	if errA != nil || errB != nil || a.ID == b.ID {
		t.Fatalf("same serial in two tenants: %+v %v / %+v %v", a, errA, b, errB)
	}
	// The same serial twice in one tenant is refused, in any case.
	for _, serial := range []string{"SN-SAME", "sn-same", "Sn-SaMe"} {
		e := newEnrollment(t, registry.DefaultTenant, serial, nil)
		before := takeSnapshot(t, s, e, nil)
		if err := s.Enroll(ctx, e); !errors.Is(err, registry.ErrSerialConflict) {
			t.Errorf("duplicate (tenant, %s) = %v, want ErrSerialConflict", serial, err)
		}
		requireUnchanged(t, s, e, nil, before)
		// Found by any case, stored as first presented.
		if d, err := s.GetDeviceBySerial(ctx, registry.DefaultTenant, serial); err != nil || d.ID != a.ID || d.Serial != "SN-SAME" {
			t.Errorf("GetDeviceBySerial(%s) = %+v, %v; want %s (SN-SAME)", serial, d, err, a.ID)
		}
	}
	// A device id already used by another serial is refused.
	e := newEnrollment(t, registry.DefaultTenant, "SN-OTHER", nil)
	e.Device.ID, e.Certificate.DeviceID = a.ID, a.ID
	if err := s.Enroll(ctx, e); err == nil {
		t.Error("Enroll reusing another serial's device id succeeded")
	}
	if _, err := s.GetDeviceBySerial(ctx, registry.DefaultTenant, "SN-OTHER"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("refused device was written: %v", err)
	}
	// A certificate serial is unique.
	e = newEnrollment(t, registry.DefaultTenant, "SN-DUPCERT", nil)
	e.Certificate.Serial = randHex(t, 20)
	if err := s.Enroll(ctx, e); err != nil {
		t.Fatal(err)
	}
	e2 := newEnrollment(t, registry.DefaultTenant, "SN-DUPCERT2", nil)
	e2.Certificate.Serial = e.Certificate.Serial
	if err := s.Enroll(ctx, e2); !errors.Is(err, registry.ErrAlreadyExists) {
		t.Errorf("duplicate certificate serial = %v, want ErrAlreadyExists", err)
	}
	if _, err := s.GetDeviceBySerial(ctx, registry.DefaultTenant, "SN-DUPCERT2"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("device of refused enrollment was written: %v", err)
	}
	verify(t, s)
}
