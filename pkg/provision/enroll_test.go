package provision_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// rawCSR is a CSR for serial and MAC URIs as given, unchecked: what a
// hostile client can send.
func rawCSR(t *testing.T, serial string, macURIs ...string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x", SerialNumber: serial}}
	for _, m := range macURIs {
		u, err := url.Parse(m)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func (f *fixture) enrollCSR(token string, csr []byte) (*provision.Result, error) {
	return f.svc.Enroll(context.Background(), provision.TokenAttestor{Store: f.store},
		&provision.Request{Credential: token, CSRPEM: csr, SourceAddr: "192.0.2.44"})
}

// revoke revokes a device as an admin would.
func (f *fixture) revoke(t *testing.T, deviceID string) {
	t.Helper()
	tn := mustTenant(t, f.store)
	if _, err := f.store.RevokeDevice(context.Background(), deviceID, registry.ReasonKeyCompromise, &registry.AuditEvent{
		TenantID: tn.ID, Actor: "admin:test", Action: string(provision.ActionDeviceRevoke), Target: deviceID, Result: registry.ResultOK,
	}); err != nil {
		t.Fatal(err)
	}
}

// TestNothingSignedForRefusals counts signatures (the fixture's Issuer is
// wrapped in a counter) across every refusal that needs none: conflicts,
// serials differing only in case, clone suspects by MAC, revoked devices,
// bad serials, MACs and CSRs, unspendable tokens and tenant policy. None
// signs; none spends its token; each is audited.
func TestNothingSignedForRefusals(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	enrolled, err := f.enroll(t, f.mint(t, provision.TokenSpec{}), "DEV-0001", macFor("DEV-0001"))
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := f.enroll(t, f.mint(t, provision.TokenSpec{}), "SN-REVOKED", macFor("SN-REVOKED"))
	if err != nil {
		t.Fatal(err)
	}
	f.revoke(t, revoked.DeviceID)
	mkTenant(t, f.store, "tpm-only", true)
	zero := &registry.Token{ID: "tok-zero", Hash: provision.HashToken(provision.TokenPrefix + "zero-expiry"),
		TenantID: mustTenant(t, f.store).ID, UsesLeft: 1, CreatedBy: "admin:test"}
	if err := f.store.CreateToken(ctx, zero, nil); err != nil {
		t.Fatal(err)
	}
	spent := f.mint(t, provision.TokenSpec{})
	if _, err := f.enroll(t, spent, "SN-SPENDER", macFor("SN-SPENDER")); err != nil {
		t.Fatal(err)
	}
	csr := func(serial string) []byte { return csrFor(t, serial, macFor(serial)) }
	long := strings.Repeat("A", 65)

	for _, tc := range []struct {
		name  string
		token string // minted unless set
		spec  provision.TokenSpec
		csr   []byte
		want  error
	}{
		{"serial enrolled, unbound token", "", provision.TokenSpec{}, csr("DEV-0001"), registry.ErrSerialConflict},
		{"serial enrolled in another case", "", provision.TokenSpec{}, csr("dev-0001"), registry.ErrSerialConflict},
		{"MAC of an enrolled device, new serial", "", provision.TokenSpec{}, csrFor(t, "SN-CLONE", macFor("DEV-0001")), provision.ErrCloneSuspect},
		{"revoked device, serial-bound token", "", provision.TokenSpec{Serial: "SN-REVOKED"}, csr("SN-REVOKED"), provision.ErrDeviceRevoked},
		{"revoked device, bound in another case", "", provision.TokenSpec{Serial: "sn-revoked"}, csr("SN-REVOKED"), provision.ErrDeviceRevoked},
		{"NUL in the serial", "", provision.TokenSpec{}, rawCSR(t, "SN\x00X", "urn:dev:mac:020000000077"), pki.ErrBadCSR},
		{"CRLF in the serial", "", provision.TokenSpec{}, rawCSR(t, "SN\r\nX", "urn:dev:mac:020000000077"), pki.ErrBadCSR},
		{"percent in the serial", "", provision.TokenSpec{}, rawCSR(t, "x%2F..", "urn:dev:mac:020000000077"), pki.ErrBadCSR},
		{"unicode look-alike", "", provision.TokenSpec{}, rawCSR(t, "DEV\u20100001", "urn:dev:mac:020000000077"), pki.ErrBadCSR},
		{"dot-dot serial", "", provision.TokenSpec{}, rawCSR(t, "..", "urn:dev:mac:020000000077"), pki.ErrBadCSR},
		{"65 characters", "", provision.TokenSpec{}, rawCSR(t, long, "urn:dev:mac:020000000077"), pki.ErrBadCSR},
		{"malformed MAC", "", provision.TokenSpec{}, rawCSR(t, "SN-BADMAC", "urn:dev:mac:02000000zz77"), pki.ErrBadCSR},
		{"not a CSR", "", provision.TokenSpec{}, []byte("junk"), pki.ErrBadCSR},
		{"zero-expiry token", zero.ID, provision.TokenSpec{}, csr("SN-ZERO"), registry.ErrTokenExpired},
		{"spent token", spent, provision.TokenSpec{}, csr("SN-AFTER-SPENT"), registry.ErrTokenSpent},
		{"token bound to another serial", "", provision.TokenSpec{Serial: "SN-ELSEWHERE"}, csr("SN-MISMATCH"), registry.ErrTokenSerialMismatch},
		{"tenant requires TPM", "", provision.TokenSpec{Tenant: "tpm-only"}, csr("SN-SOFT"), provision.ErrTPMRequired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := tc.token
			switch tok {
			case "":
				tok = f.mint(t, tc.spec)
			case zero.ID:
				tok = provision.TokenPrefix + "zero-expiry"
			}
			usesBefore := tokenUses(t, f.store, tok)
			seq := lastAudit(t, f.store).Seq
			hits := refusalHits(t, f.store, "")
			signed := f.issuer.n.Load()
			res, err := f.enrollCSR(tok, tc.csr)
			if res != nil || !errors.Is(err, tc.want) {
				t.Fatalf("Enroll = %+v, %v; want %v", res, err, tc.want)
			}
			if n := f.issuer.n.Load() - signed; n != 0 {
				t.Errorf("%d signatures for a refused request", n)
			}
			if n := tokenUses(t, f.store, tok); n != usesBefore {
				t.Errorf("token uses %d -> %d: a refusal spent it", usesBefore, n)
			}
			// A refusal of a known token or device is chained; of nobody
			// authenticated (an expired token is not admitted), counted.
			ev := lastAudit(t, f.store)
			counted := refusalHits(t, f.store, "") - hits
			if (ev.Seq == seq || ev.Result != registry.ResultDenied) && counted != 1 {
				t.Errorf("refusal not audited: last event %+v, %d refusals counted", ev, counted)
			}
		})
	}
	if d, err := f.store.GetDevice(ctx, enrolled.DeviceID); err != nil || d.Serial != "DEV-0001" || d.Status != registry.DeviceActive {
		t.Errorf("enrolled device after the refusals = %+v, %v", d, err)
	}
	if d, err := f.store.GetDevice(ctx, revoked.DeviceID); err != nil || d.Status != registry.DeviceRevoked {
		t.Errorf("revoked device after the refusals = %+v, %v; want still revoked", d, err)
	}
	if err := f.store.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestSerialCaseFolding: serials compare case-insensitively within a
// tenant and are kept as presented; a token bound to a serial matches it
// in any case and re-enrolls the device, keeping its id.
func TestSerialCaseFolding(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	first, err := f.enroll(t, f.mint(t, provision.TokenSpec{}), "DEV-0001", macFor("DEV-0001"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.enroll(t, f.mint(t, provision.TokenSpec{}), "dev-0001", macFor("dev-0001")); !errors.Is(err, registry.ErrSerialConflict) {
		t.Fatalf("dev-0001 beside DEV-0001: %v, want ErrSerialConflict", err)
	}
	if d, err := f.store.GetDeviceBySerial(ctx, mustTenant(t, f.store).ID, "dev-0001"); err != nil || d.ID != first.DeviceID || d.Serial != "DEV-0001" {
		t.Fatalf("lookup by dev-0001 = %+v, %v; want %s kept as DEV-0001", d, err, first.DeviceID)
	}
	again, err := f.enroll(t, f.mint(t, provision.TokenSpec{Serial: "dev-0001"}), "DEV-0001", macFor("DEV-0001"))
	if err != nil {
		t.Fatalf("re-enrollment with a token bound to dev-0001: %v", err)
	}
	if again.DeviceID != first.DeviceID {
		t.Errorf("re-enrollment device %s, want %s", again.DeviceID, first.DeviceID)
	}
}

// TestMACCloneHeld: a new serial claiming the MAC of an enrolled, active
// device is a clone suspect: held for an admin (registry.Quarantine, reason
// mac-has-other-serial), audited, nothing signed, the token unspent. The
// device re-enrolling with its own MACs is fine; once it is revoked its MAC
// is free.
func TestMACCloneHeld(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	const mac = "02:00:00:00:ca:fe"
	first, err := f.enroll(t, f.mint(t, provision.TokenSpec{}), "SN-MAC-1", mac)
	if err != nil {
		t.Fatal(err)
	}
	tok := f.mint(t, provision.TokenSpec{})
	signed := f.issuer.n.Load()
	_, err = f.enroll(t, tok, "SN-MAC-2", "02:00:00:00:ca:01", mac)
	id := provision.QuarantineID(err)
	if !errors.Is(err, provision.ErrCloneSuspect) || id == "" {
		t.Fatalf("new serial with an enrolled MAC: %v, want ErrCloneSuspect held", err)
	}
	if f.issuer.n.Load() != signed {
		t.Error("a certificate was signed for a clone suspect")
	}
	if n := tokenUses(t, f.store, tok); n != 1 {
		t.Errorf("token uses left %d, want 1", n)
	}
	q, err := f.store.GetQuarantine(ctx, id)
	if err != nil || q.Reason != registry.ReasonMACOtherSerial || q.Serial != "SN-MAC-2" || q.ConflictDeviceID != first.DeviceID ||
		q.Status != registry.QuarantineHeld || q.SourceAddr != "127.0.0.1" {
		t.Fatalf("quarantine = %+v, %v", q, err)
	}
	if ev := lastAudit(t, f.store); ev.Action != string(provision.ActionCloneSuspect) || ev.Result != registry.ResultDenied ||
		ev.Target != id || !strings.HasPrefix(ev.Actor, "token:") || !strings.Contains(ev.Detail, "MAC 02000000cafe") {
		t.Errorf("audit = %+v", ev)
	}
	if _, err := f.store.GetDeviceBySerial(ctx, mustTenant(t, f.store).ID, "SN-MAC-2"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("clone suspect recorded as a device: %v", err)
	}
	// The device itself re-enrolls with its MAC.
	if _, err := f.enroll(t, f.mint(t, provision.TokenSpec{Serial: "SN-MAC-1"}), "SN-MAC-1", mac); err != nil {
		t.Fatalf("re-enrollment with its own MAC: %v", err)
	}
	// Revoked, it no longer holds the MAC.
	f.revoke(t, first.DeviceID)
	if _, err := f.enroll(t, f.mint(t, provision.TokenSpec{}), "SN-MAC-3", mac); err != nil {
		t.Fatalf("the MAC of a revoked device: %v", err)
	}
}

// TestRevokedStaysRevoked: a revoked device is not brought back by a plain
// serial-bound token (ErrDeviceRevoked, the token unspent, nothing signed);
// a token minted with the reinstate flag re-enrolls it, keeping its id,
// audited as a reinstatement; a reinstate token needs a serial.
func TestRevokedStaysRevoked(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	const serial = "SN-REINSTATE"
	first, err := f.enroll(t, f.mint(t, provision.TokenSpec{}), serial, macFor(serial))
	if err != nil {
		t.Fatal(err)
	}
	f.revoke(t, first.DeviceID)

	plain := f.mint(t, provision.TokenSpec{Serial: serial})
	signed := f.issuer.n.Load()
	if _, err := f.enroll(t, plain, serial, macFor(serial)); !errors.Is(err, provision.ErrDeviceRevoked) {
		t.Fatalf("serial-bound token for a revoked device: %v, want ErrDeviceRevoked", err)
	}
	if f.issuer.n.Load() != signed || tokenUses(t, f.store, plain) != 1 {
		t.Errorf("signatures %d, token uses %d; want none signed, the token unspent", f.issuer.n.Load()-signed, tokenUses(t, f.store, plain))
	}
	if ev := lastAudit(t, f.store); ev.Result != registry.ResultDenied || ev.Target != first.DeviceID {
		t.Errorf("refusal audit = %+v", ev)
	}

	if _, _, err := provision.MintToken(ctx, f.store, f.now, provision.TokenSpec{Reinstate: true}); !errors.Is(err, provision.ErrInvalidArgument) {
		t.Fatalf("reinstate token without a serial: %v, want ErrInvalidArgument", err)
	}
	reinstate := f.mint(t, provision.TokenSpec{Serial: serial, Reinstate: true})
	res, err := f.enroll(t, reinstate, serial, macFor(serial))
	if err != nil {
		t.Fatalf("reinstate token: %v", err)
	}
	if res.DeviceID != first.DeviceID {
		t.Errorf("reinstated device id %s, want %s", res.DeviceID, first.DeviceID)
	}
	if d, err := f.store.GetDevice(ctx, first.DeviceID); err != nil || d.Status != registry.DeviceActive {
		t.Errorf("device after reinstatement = %+v, %v", d, err)
	}
	if n := tokenUses(t, f.store, reinstate); n != 0 {
		t.Errorf("reinstate token uses left %d, want 0", n)
	}
	ev := lastAudit(t, f.store)
	if ev.Action != string(provision.ActionDeviceReinstate) || ev.Result != registry.ResultOK || ev.Target != first.DeviceID ||
		!strings.Contains(ev.Detail, "reinstated") || !strings.HasPrefix(ev.Actor, "token:") {
		t.Errorf("reinstatement audit = %+v", ev)
	}
	// Active again, a plain serial-bound token re-enrolls it as usual.
	if _, err := f.enroll(t, plain, serial, macFor(serial)); err != nil {
		t.Fatalf("serial-bound token after the reinstatement: %v", err)
	}
	if err := f.store.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestZeroExpiryTokenRefused: the one token-expiry rule
// (registry.Token.Spendable) holds in provision: a token with no expiry is
// expired, fail closed.
func TestZeroExpiryTokenRefused(t *testing.T) {
	f := newFixture(t)
	const secret = provision.TokenPrefix + "no-expiry-at-all"
	if err := f.store.CreateToken(context.Background(), &registry.Token{ID: "tok-noexp", Hash: provision.HashToken(secret),
		TenantID: mustTenant(t, f.store).ID, UsesLeft: 5, CreatedBy: "admin:test"}, nil); err != nil {
		t.Fatal(err)
	}
	_, err := provision.TokenAttestor{Store: f.store, Now: time.Now}.Admit(context.Background(), &provision.Request{Credential: secret})
	if !errors.Is(err, registry.ErrTokenExpired) {
		t.Fatalf("Admit(zero expiry) = %v, want ErrTokenExpired", err)
	}
}
