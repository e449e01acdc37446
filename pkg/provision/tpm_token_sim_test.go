//go:build tpmsimulator

package provision_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/tpm/verify"
	"devpki/pkg/tpm/verify/ektest"
)

// TestTPMEnrollWithToken runs token + TPM attestation enrollment on
// simulator evidence into a tenant that requires TPM attestation: every
// refusal leaves the token unspent and signs nothing; a success spends it in
// the enrollment transaction; the clone defence still holds.
func TestTPMEnrollWithToken(t *testing.T) {
	ctx := context.Background()
	m := ektest.New(t)
	f := newTPMFixture(t, m.Roots(), m.Intermediates())
	secure := mkTenant(t, f.store, "secure", true)
	const serial, mac = "SN-TOK-1", "02:00:00:00:00:01"
	d := openSim(t, "00000000000000c1", m)
	closed := false
	t.Cleanup(func() {
		if !closed {
			d.tp.Close()
		}
	})
	challenge := func(t *testing.T, d *simDevice, token, serial string) (*provision.TPMChallenge, error) {
		t.Helper()
		req := d.challengeRequest(t, serial, macFor(serial))
		req.Token = token
		return f.svc.TPMChallenge(ctx, req)
	}
	// refused checks what every refusal must leave: the token's uses, no
	// signature, a denial in the audit log that names the token when it is
	// known.
	// mark is where the audit logs stood before the request under test.
	mark := markAudit(t, f.store)
	refused := func(t *testing.T, token string, uses int, signed int64, tokenID string) {
		t.Helper()
		if n := tokenUses(t, f.store, token); n != uses {
			t.Errorf("token uses left %d, want %d", n, uses)
		}
		if f.issuer.n.Load() != signed {
			t.Error("a certificate was signed")
		}
		// An anonymous refusal (an unknown or expired token) is counted in
		// the refusal log; one with a token the CA knows is a chained
		// denial naming it.
		if !deniedSince(t, f.store, mark, tokenID) {
			t.Errorf("refusal not audited (want a denial naming token %q)", tokenID)
		}
		mark = markAudit(t, f.store)
	}
	mint := func(t *testing.T, spec provision.TokenSpec) (string, *registry.Token) {
		t.Helper()
		if spec.Tenant == "" {
			spec.Tenant = "secure"
		}
		tok, rec, err := provision.MintToken(ctx, f.store, time.Now(), spec)
		if err != nil {
			t.Fatal(err)
		}
		return tok, rec
	}

	t.Run("unknown token", func(t *testing.T) {
		hits := refusalHits(t, f.store, "enroll.tpm.challenge")
		if _, err := challenge(t, d, provision.TokenPrefix+"unknown", serial); !errors.Is(err, registry.ErrTokenInvalid) {
			t.Fatalf("TPMChallenge = %v, want ErrTokenInvalid", err)
		}
		if refusalHits(t, f.store, "enroll.tpm.challenge") != hits+1 {
			t.Error("an unknown token's refusal is not in the refusal log")
		}
		mark = markAudit(t, f.store)
	})
	t.Run("expired token", func(t *testing.T) {
		tok, _, err := provision.MintToken(ctx, f.store, time.Now().Add(-2*time.Hour), provision.TokenSpec{Tenant: "secure", TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		signed := f.issuer.n.Load()
		if _, err := challenge(t, d, tok, serial); !errors.Is(err, registry.ErrTokenExpired) {
			t.Fatalf("TPMChallenge = %v, want ErrTokenExpired", err)
		}
		refused(t, tok, 1, signed, "")
	})
	t.Run("spent token", func(t *testing.T) {
		tok := f.mint(t, provision.TokenSpec{})
		if _, err := f.enroll(t, tok, "SN-SW-9", macFor("SN-SW-9")); err != nil {
			t.Fatal(err)
		}
		signed := f.issuer.n.Load()
		if _, err := challenge(t, d, tok, serial); !errors.Is(err, registry.ErrTokenSpent) {
			t.Fatalf("TPMChallenge = %v, want ErrTokenSpent", err)
		}
		refused(t, tok, 0, signed, "")
	})
	t.Run("serial-bound token, another serial", func(t *testing.T) {
		tok, rec := mint(t, provision.TokenSpec{Serial: "SN-TOK-OTHER"})
		signed := f.issuer.n.Load()
		if _, err := challenge(t, d, tok, serial); !errors.Is(err, registry.ErrTokenSerialMismatch) {
			t.Fatalf("TPMChallenge = %v, want ErrTokenSerialMismatch", err)
		}
		refused(t, tok, 1, signed, rec.ID)
	})
	t.Run("refused TPMEnroll leaves the token unspent", func(t *testing.T) {
		tok, rec := mint(t, provision.TokenSpec{Serial: serial})
		ch, err := challenge(t, d, tok, serial)
		if err != nil {
			t.Fatal(err)
		}
		req := d.answer(t, ch, serial, macFor(serial))
		req.TPM.ActivatedSecret[0] ^= 1
		signed := f.issuer.n.Load()
		if _, err := f.svc.Enroll(ctx, f.tpm, req); !errors.Is(err, verify.ErrActivation) {
			t.Fatalf("TPMEnroll = %v, want ErrActivation", err)
		}
		// A failed activation does not reveal the challenge's binding (so
		// not its token either): the denial names the challenge and the EK.
		refused(t, tok, 1, signed, "")

		// Refused after activation: the denial names the token.
		if ch, err = challenge(t, d, tok, serial); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.Enroll(ctx, f.tpm, d.answer(t, ch, "SN-TOK-NOT-BOUND", macFor("SN-TOK-NOT-BOUND"))); !errors.Is(err, pki.ErrBadCSR) {
			t.Fatalf("TPMEnroll = %v, want ErrBadCSR", err)
		}
		refused(t, tok, 1, signed, rec.ID)
		if _, err := f.store.GetDeviceBySerial(ctx, secure.ID, serial); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("device recorded: %v", err)
		}
	})
	t.Run("token spent between challenge and answer", func(t *testing.T) {
		// A default-tenant token: spending it with a software enrollment is
		// allowed there.
		tok, rec := mint(t, provision.TokenSpec{Tenant: registry.DefaultTenant})
		ch, err := challenge(t, d, tok, "SN-TOK-RACE")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.enroll(t, tok, "SN-SW-10", macFor("SN-SW-10")); err != nil {
			t.Fatal(err)
		}
		signed := f.issuer.n.Load()
		if _, err := f.svc.Enroll(ctx, f.tpm, d.answer(t, ch, "SN-TOK-RACE", macFor("SN-TOK-RACE"))); !errors.Is(err, registry.ErrTokenSpent) {
			t.Fatalf("TPMEnroll = %v, want ErrTokenSpent", err)
		}
		// The attestor checks the token again before anything is signed.
		if f.issuer.n.Load() != signed {
			t.Errorf("signatures %d, want %d: refused before signing", f.issuer.n.Load(), signed)
		}
		if _, err := f.store.GetDeviceBySerial(ctx, mustTenant(t, f.store).ID, "SN-TOK-RACE"); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("device recorded: %v", err)
		}
		if !deniedSince(t, f.store, mark, rec.ID) && !deniedSince(t, f.store, mark, "") {
			t.Error("refusal not audited")
		}
	})

	var first *provision.Result
	var firstToken string
	t.Run("token + TPM enrolls and spends the token", func(t *testing.T) {
		tok, rec := mint(t, provision.TokenSpec{})
		firstToken = tok
		ch, err := challenge(t, d, tok, serial)
		if err != nil {
			t.Fatal(err)
		}
		res, err := f.svc.Enroll(ctx, f.tpm, d.answer(t, ch, serial, macFor(serial)))
		if err != nil {
			t.Fatal(err)
		}
		first = res
		if n := tokenUses(t, f.store, tok); n != 0 {
			t.Errorf("token uses left %d, want 0", n)
		}
		id, err := pki.DeviceIdentity(res.Certificate, "test.devpki")
		if err != nil || id.Tenant != "secure" || id.EKHash != d.ekHash || id.Serial != serial {
			t.Errorf("identity = %+v, %v", id, err)
		}
		dev, err := f.store.GetDeviceBySerial(ctx, secure.ID, serial)
		if err != nil || dev.ID != res.DeviceID || dev.Method != provision.MethodTPM || dev.EKHash != d.ekHash {
			t.Errorf("device = %+v, %v", dev, err)
		}
		crt, err := f.store.GetCertificate(ctx, res.Certificate.SerialNumber.Text(16))
		if err != nil || !bytes.Equal(crt.TokenHash, provision.HashToken(tok)) {
			t.Errorf("certificate record = %+v, %v; want the token hash", crt, err)
		}
		ev := lastAudit(t, f.store)
		if ev.Action != "enroll" || ev.Result != registry.ResultOK || ev.Actor != "token:"+rec.ID ||
			!strings.Contains(ev.Detail, "ek="+d.ekHash) || !strings.Contains(ev.Detail, "method=tpm") {
			t.Errorf("audit = %+v", ev)
		}
		// Spent: nobody else gets in with it — not this TPM for another
		// serial, nor another TPM for this serial (below).
		if _, err := challenge(t, d, tok, "SN-TOK-3"); !errors.Is(err, registry.ErrTokenSpent) {
			t.Errorf("spent token, another serial: %v, want ErrTokenSpent", err)
		}
		// The answer was lost (power cut): the same TPM attests again with
		// the same token and gets a new certificate for the same device;
		// the token is not spent twice.
		ch, err = challenge(t, d, tok, serial)
		if err != nil {
			t.Fatalf("replay of the token's own enrollment: %v", err)
		}
		again, err := f.svc.Enroll(ctx, f.tpm, d.answer(t, ch, serial, macFor(serial)))
		if err != nil {
			t.Fatal(err)
		}
		if again.DeviceID != res.DeviceID || again.Certificate.SerialNumber.Cmp(res.Certificate.SerialNumber) == 0 {
			t.Errorf("replay: device %s cert %s; want device %s, a new certificate", again.DeviceID, again.Certificate.SerialNumber, res.DeviceID)
		}
		if n := tokenUses(t, f.store, tok); n != 0 {
			t.Errorf("token uses left %d after the replay, want 0", n)
		}
		if ev := lastAudit(t, f.store); ev.Action != "enroll" || ev.Actor != "token:"+rec.ID {
			t.Errorf("replay audit = %+v", ev)
		}
	})
	t.Run("clone: an enrolled EK with a fresh token and another serial", func(t *testing.T) {
		tok, _ := mint(t, provision.TokenSpec{})
		signed := f.issuer.n.Load()
		if _, err := challenge(t, d, tok, "SN-TOK-2"); !errors.Is(err, provision.ErrCloneSuspect) {
			t.Fatalf("TPMChallenge = %v, want ErrCloneSuspect", err)
		}
		refused(t, tok, 1, signed, "")
	})
	t.Run("reset: same EK, an unbound token", func(t *testing.T) {
		tok, _ := mint(t, provision.TokenSpec{})
		ch, err := challenge(t, d, tok, serial)
		if err != nil {
			t.Fatal(err)
		}
		res, err := f.svc.Enroll(ctx, f.tpm, d.answer(t, ch, serial, macFor(serial)))
		if err != nil {
			t.Fatal(err)
		}
		if res.DeviceID != first.DeviceID {
			t.Errorf("device id %s, want %s", res.DeviceID, first.DeviceID)
		}
		if n := tokenUses(t, f.store, tok); n != 0 {
			t.Errorf("token uses left %d, want 0", n)
		}
	})
	t.Run("require_tpm tenant admits tokenless TPM enrollment", func(t *testing.T) {
		cfg := &provision.TPMConfig{EKRoots: m.Roots(), EKIntermediates: m.Intermediates(),
			Challenger: verify.NewChallenger(verify.Config{}), Tenant: "secure"}
		svc, err := provision.New(provision.Config{Store: f.store, Issuer: f.issuer, TrustDomain: "test.devpki", TPM: cfg})
		if err != nil {
			t.Fatal(err)
		}
		ch, err := svc.TPMChallenge(ctx, d.challengeRequest(t, serial, macFor(serial)))
		if err != nil {
			t.Fatal(err)
		}
		res, err := svc.Enroll(ctx, tpmAttestor(f.store, cfg), d.answer(t, ch, serial, macFor(serial)))
		if err != nil {
			t.Fatal(err)
		}
		if res.DeviceID != first.DeviceID {
			t.Errorf("device id %s, want %s", res.DeviceID, first.DeviceID)
		}
	})

	closed = true
	if err := d.tp.Close(); err != nil {
		t.Fatal(err)
	}
	t.Run("spent token, another TPM for the same serial", func(t *testing.T) {
		other := openSim(t, "00000000000000c3", m)
		defer other.tp.Close()
		signed := f.issuer.n.Load()
		if _, err := challenge(t, other, firstToken, serial); !errors.Is(err, registry.ErrTokenSpent) {
			t.Fatalf("TPMChallenge = %v, want ErrTokenSpent", err)
		}
		refused(t, firstToken, 0, signed, "")
	})
	t.Run("bare EK pre-registered in another tenant than the token's", func(t *testing.T) {
		other := openSim(t, "00000000000000c2", m)
		defer other.tp.Close()
		der, err := x509.MarshalPKIXPublicKey(mustParse(t, other.ekCert).PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		dflt := mustTenant(t, f.store)
		if err := f.store.PutPreregistration(ctx, &registry.Preregistration{
			EKHash: other.ekHash, TenantID: dflt.ID, Serial: "SN-PRE-T", CreatedBy: "admin:test",
		}, &registry.AuditEvent{TenantID: dflt.ID, Actor: "admin:test", Action: "tpm.preregister", Target: other.ekHash, Result: registry.ResultOK}); err != nil {
			t.Fatal(err)
		}
		bare := func(token string) *provision.TPMChallengeRequest {
			req := other.challengeRequest(t, "SN-PRE-T", macFor("SN-PRE-T"))
			req.EKCertDER, req.EKPubDER, req.Token = nil, der, token
			return req
		}
		tok, rec := mint(t, provision.TokenSpec{})
		signed := f.issuer.n.Load()
		if _, err := f.svc.TPMChallenge(ctx, bare(tok)); !errors.Is(err, registry.ErrTokenTenantMismatch) {
			t.Fatalf("TPMChallenge = %v, want ErrTokenTenantMismatch", err)
		}
		refused(t, tok, 1, signed, rec.ID)

		// A token of the pre-registration's tenant is accepted.
		tok, _ = mint(t, provision.TokenSpec{Tenant: registry.DefaultTenant, Serial: "SN-PRE-T"})
		ch, err := f.svc.TPMChallenge(ctx, bare(tok))
		if err != nil {
			t.Fatal(err)
		}
		res, err := f.svc.Enroll(ctx, f.tpm, other.answer(t, ch, "SN-PRE-T", macFor("SN-PRE-T")))
		if err != nil {
			t.Fatal(err)
		}
		if id, err := pki.DeviceIdentity(res.Certificate, "test.devpki"); err != nil || id.Tenant != registry.DefaultTenant || id.EKHash != other.ekHash {
			t.Errorf("identity = %+v, %v", id, err)
		}
		if n := tokenUses(t, f.store, tok); n != 0 {
			t.Errorf("token uses left %d, want 0", n)
		}
	})
	if err := f.store.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

// auditMark is where the chained log and the refusal log stood.
type auditMark struct{ seq, hits int64 }

func markAudit(t *testing.T, s registry.Store) auditMark {
	t.Helper()
	m := auditMark{hits: refusalHits(t, s, "")}
	if ev := lastAudit(t, s); ev != nil {
		m.seq = ev.Seq
	}
	return m
}

// deniedSince reports whether a refusal was audited after m: a chained
// denial naming want (any denial when want is empty) or, when want is
// empty, an anonymous refusal counted in the refusal log.
func deniedSince(t *testing.T, s registry.Store, m auditMark, want string) bool {
	t.Helper()
	evs, err := s.ListAudit(context.Background(), m.seq, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Result == registry.ResultDenied && (want == "" || strings.Contains(ev.Detail, want)) {
			return true
		}
	}
	return want == "" && refusalHits(t, s, "") > m.hits
}
