//go:build tpmsimulator

package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// TestTPMEnrollWithTokenOverHTTP: token + TPM attestation through the typed
// client (TPMChallengeWithToken) into a tenant that requires TPM
// attestation; a refused token is the same problem as on /v1/enroll and
// stays unspent; a success spends it.
func TestTPMEnrollWithTokenOverHTTP(t *testing.T) {
	ctx := context.Background()
	f, m, c := newSimFixture(t)
	secure, err := provision.CreateTenant(ctx, f.store, provision.TenantSpec{Name: "secure", RequireTPM: true, Who: provision.AdminActor("test", "", "")})
	if err != nil {
		t.Fatal(err)
	}
	d := openSimDevice(t, "00000000000000b1", m)
	const serial = "SN-HTTP-TOK-1"

	spent := f.mint(provision.TokenSpec{})
	f.mustEnroll(spent, "SN-HTTP-SW-1")
	refusals := []struct {
		name   string
		token  string
		status int
		slug   string
	}{
		{"unknown token", provision.TokenPrefix + "nope", http.StatusUnauthorized, "token-invalid"},
		{"expired token", f.mintAt(f.now.Add(-2*time.Hour), provision.TokenSpec{Tenant: "secure", TTL: time.Hour}), http.StatusUnauthorized, "token-expired"},
		{"spent token", spent, http.StatusUnauthorized, "token-spent"},
		{"serial-bound token, another serial", f.mint(provision.TokenSpec{Tenant: "secure", Serial: "SN-HTTP-TOK-9"}), http.StatusForbidden, "token-mismatch"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			uses, before := f.usesLeft(tt.token), f.counts()
			_, err := c.TPMChallengeWithToken(ctx, tt.token, d.claim(t, serial))
			wantStatus(t, err, tt.status, tt.slug)
			if f.usesLeft(tt.token) != uses || f.counts() != before {
				t.Errorf("token uses %d -> %d, rows %+v -> %+v", uses, f.usesLeft(tt.token), before, f.counts())
			}
		})
	}

	t.Run("token + TPM enrolls into the require_tpm tenant", func(t *testing.T) {
		// A software key with a token of that tenant is refused...
		tok := f.mint(provision.TokenSpec{Tenant: "secure"})
		_, err := c.Enroll(ctx, tok, &wire.EnrollRequest{CSR: string(f.csr(serial))})
		wantStatus(t, err, http.StatusForbidden, wire.SlugTPMRequired)
		if f.usesLeft(tok) != 1 {
			t.Fatal("the refused enrollment spent the token")
		}
		// ...the same token with TPM evidence is admitted, and spent.
		ch, err := c.TPMChallengeWithToken(ctx, tok, d.claim(t, serial))
		if err != nil {
			t.Fatal(err)
		}
		if f.usesLeft(tok) != 1 {
			t.Fatal("the challenge spent the token")
		}
		res, err := c.TPMEnroll(ctx, d.answer(t, ch, serial).Request)
		if err != nil {
			t.Fatal(err)
		}
		if n := f.usesLeft(tok); n != 0 {
			t.Errorf("token uses left %d, want 0", n)
		}
		id, err := pki.DeviceIdentity(leafOf(t, res.Certificate), pkitest.TrustDomain)
		if err != nil || id.Tenant != "secure" || id.EKHash != d.ekHash || id.DeviceID != res.DeviceID {
			t.Fatalf("identity = %+v, %v", id, err)
		}
		dev, err := f.store.GetDeviceBySerial(ctx, secure.ID, serial)
		if err != nil || dev.Method != "tpm" || dev.EKHash != d.ekHash {
			t.Fatalf("device = %+v, %v", dev, err)
		}
		evs := f.auditSince(0)
		if ev := evs[len(evs)-1]; ev.Action != "enroll" || ev.Result != registry.ResultOK || !strings.HasPrefix(ev.Actor, "token:") {
			t.Errorf("audit = %+v", ev)
		}
		// Spent now: a challenge with it for another serial is refused; the
		// same TPM and serial may replay the enrollment (a lost answer).
		_, err = c.TPMChallengeWithToken(ctx, tok, d.claim(t, "SN-HTTP-TOK-OTHER"))
		wantStatus(t, err, http.StatusUnauthorized, "token-spent")
		if _, err := c.TPMChallengeWithToken(ctx, tok, d.claim(t, serial)); err != nil {
			t.Errorf("replay of the token's own enrollment: %v", err)
		}
	})
	t.Run("without the token the device claims the default tenant", func(t *testing.T) {
		// There its EK is already bound to the device in "secure": a clone
		// suspect, the same EK claiming a second identity.
		_, err := c.TPMChallenge(ctx, d.claim(t, serial))
		wantStatus(t, err, http.StatusForbidden, wire.SlugCloneSuspect)
	})
}
