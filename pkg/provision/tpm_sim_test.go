//go:build tpmsimulator

package provision_test

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/x509util"

	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/tpm"
	"devpki/pkg/tpm/verify"
	"devpki/pkg/tpm/verify/ektest"
)

// openSim opens the in-process simulator with seed (one at a time per
// process: close it before opening another), its EK certified by m.
func openSim(t *testing.T, seed string, m *ektest.Manufacturer) *simDevice {
	t.Helper()
	return openDevice(t, "simulator:"+seed, func(ek *tpm.EK) []byte { return m.EKCert(t, ek.Public) })
}

// TestTPMEnrollSimulator runs TPM attestation enrollment on simulator
// evidence: the happy path, each refusal, re-enrollment after a reset and
// the clone defence.
func TestTPMEnrollSimulator(t *testing.T) {
	ctx := context.Background()
	m := ektest.New(t)
	f := newTPMFixture(t, m.Roots(), m.Intermediates())
	const serial, mac = "SN-TPM-1", "02:00:00:00:00:01"
	d := openSim(t, "0000000000000001", m)

	enroll := func(t *testing.T, d *simDevice, serial string) (*provision.Request, *provision.Result, error) {
		t.Helper()
		ch, err := f.svc.TPMChallenge(ctx, d.challengeRequest(t, serial, mac))
		if err != nil {
			return nil, nil, err
		}
		req := d.answer(t, ch, serial, mac)
		res, err := f.svc.Enroll(ctx, f.tpm, req)
		return req, res, err
	}

	var first *provision.Result
	t.Run("happy path", func(t *testing.T) {
		req, res, err := enroll(t, d, serial)
		if err != nil {
			t.Fatal(err)
		}
		first = res
		id, err := pki.DeviceIdentity(res.Certificate, "test.devpki")
		if err != nil {
			t.Fatal(err)
		}
		if id.EKHash != d.ekHash || id.Serial != serial || len(id.MACs) != 1 || id.MACs[0] != "020000000001" {
			t.Errorf("identity = %+v, want EK %s", id, d.ekHash)
		}
		sans, err := x509util.ParseSubjectAlternativeNames(res.Certificate)
		if err != nil || len(sans.PermanentIdentifiers) != 1 || sans.PermanentIdentifiers[0].Identifier != d.ekHash {
			t.Errorf("PermanentIdentifiers = %+v, %v", sans.PermanentIdentifiers, err)
		}
		dev, err := f.store.GetDevice(ctx, res.DeviceID)
		if err != nil {
			t.Fatal(err)
		}
		if dev.Method != "tpm" || dev.EKHash != d.ekHash || dev.Status != registry.DeviceActive || dev.Serial != serial {
			t.Errorf("device = %+v", dev)
		}
		if ev := lastAudit(t, f.store); ev.Action != "enroll" || ev.Result != registry.ResultOK || !strings.Contains(ev.Detail, d.ekHash) {
			t.Errorf("audit = %+v", ev)
		}

		// The same answer again: the challenge is spent (an anonymous
		// refusal: counted in the refusal log).
		hits := refusalHits(t, f.store, "enroll.tpm")
		if _, err := f.svc.Enroll(ctx, f.tpm, req); !errors.Is(err, verify.ErrChallengeUsed) {
			t.Fatalf("replayed challenge: %v, want ErrChallengeUsed", err)
		}
		if refusalHits(t, f.store, "enroll.tpm") != hits+1 {
			t.Error("the replay is not in the refusal log")
		}
	})

	t.Run("renewal keeps the EK identity; a software key is refused", func(t *testing.T) {
		same, err := f.renew(t, first.Certificate, nil)
		if err != nil {
			t.Fatal(err)
		}
		if id, err := pki.DeviceIdentity(same.Certificate, "test.devpki"); err != nil || id.EKHash != d.ekHash {
			t.Errorf("same-key renewal identity = %+v, %v; want EK %s", id, err, d.ekHash)
		}
		// A software key is refused: the device is TPM-attested (re-keys
		// with a certified TPM key: rekey_sim_test.go).
		if _, err := f.renew(t, same.Certificate, csrFor(t, serial, "020000000001")); !errors.Is(err, provision.ErrTPMCertifyRequired) {
			t.Fatalf("re-key to a software key: %v, want ErrTPMCertifyRequired", err)
		}
	})

	refused := []struct {
		name      string
		csrSerial string // the serial in the TPM key's CSR; empty: the challenge's
		mod       func(t *testing.T, req *provision.Request)
		want      error
	}{
		{"wrong secret", "", func(t *testing.T, req *provision.Request) { req.TPM.ActivatedSecret[0] ^= 1 }, verify.ErrActivation},
		{"CSR key is not the certified key", "", func(t *testing.T, req *provision.Request) {
			_, _, req.CSRPEM = f.ca.DeviceKeyAndCSR(t, serial, mac)
		}, verify.ErrCSR},
		{"CSR names another serial than the challenge", "SN-OTHER", func(*testing.T, *provision.Request) {}, pki.ErrBadCSR},
		{"malformed CSR", "", func(t *testing.T, req *provision.Request) { req.CSRPEM = []byte("junk") }, pki.ErrBadCSR},
		{"unknown challenge", "", func(t *testing.T, req *provision.Request) { req.TPM.ChallengeID = "nope" }, verify.ErrChallengeNotFound},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			before := f.issuer.n.Load()
			ch, err := f.svc.TPMChallenge(ctx, d.challengeRequest(t, serial, mac))
			if err != nil {
				t.Fatal(err)
			}
			csrSerial := serial
			if tt.csrSerial != "" {
				csrSerial = tt.csrSerial
			}
			req := d.answer(t, ch, csrSerial, mac)
			tt.mod(t, req)
			if _, err = f.svc.Enroll(ctx, f.tpm, req); !errors.Is(err, tt.want) {
				t.Fatalf("TPMEnroll = %v, want %v", err, tt.want)
			}
			if f.issuer.n.Load() != before {
				t.Error("a certificate was signed")
			}
			if ev := lastAudit(t, f.store); ev.Result != registry.ResultDenied {
				t.Errorf("audit = %+v, want a denial", ev)
			}
		})
	}

	t.Run("EK certificate from an unconfigured root", func(t *testing.T) {
		req := d.challengeRequest(t, serial, mac)
		req.EKCertDER = ektest.New(t).EKCert(t, mustParse(t, d.ekCert).PublicKey)
		hits := refusalHits(t, f.store, "enroll.tpm.challenge")
		if _, err := f.svc.TPMChallenge(ctx, req); !errors.Is(err, verify.ErrEKUntrusted) {
			t.Fatalf("TPMChallenge = %v, want ErrEKUntrusted", err)
		}
		if refusalHits(t, f.store, "enroll.tpm.challenge") != hits+1 {
			t.Error("an untrusted EK's refusal is not in the refusal log")
		}
	})
	t.Run("bare EK public key, not pre-registered", func(t *testing.T) {
		req := d.challengeRequest(t, serial, mac)
		der, err := x509.MarshalPKIXPublicKey(mustParse(t, d.ekCert).PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		req.EKCertDER, req.EKPubDER = nil, der
		if _, err := f.svc.TPMChallenge(ctx, req); !errors.Is(err, verify.ErrEKUntrusted) || !strings.Contains(err.Error(), "not pre-registered") {
			t.Fatalf("TPMChallenge = %v, want ErrEKUntrusted: not pre-registered", err)
		}
	})
	t.Run("expired challenge", func(t *testing.T) {
		now := time.Now()
		cfg := &provision.TPMConfig{EKRoots: m.Roots(), EKIntermediates: m.Intermediates(),
			Challenger: verify.NewChallenger(verify.Config{Now: func() time.Time { return now }, TTL: time.Minute})}
		svc, err := provision.New(provision.Config{Store: f.store, Issuer: f.issuer, TrustDomain: "test.devpki", TPM: cfg})
		if err != nil {
			t.Fatal(err)
		}
		ch, err := svc.TPMChallenge(ctx, d.challengeRequest(t, serial, mac))
		if err != nil {
			t.Fatal(err)
		}
		req := d.answer(t, ch, serial, mac)
		now = now.Add(time.Minute)
		if _, err := svc.Enroll(ctx, tpmAttestor(f.store, cfg), req); !errors.Is(err, verify.ErrChallengeExpired) {
			t.Fatalf("TPMEnroll = %v, want ErrChallengeExpired", err)
		}
	})
	t.Run("bad serial and MAC", func(t *testing.T) {
		if _, err := f.svc.TPMChallenge(ctx, d.challengeRequest(t, "bad serial")); !errors.Is(err, provision.ErrInvalidArgument) {
			t.Errorf("bad serial: %v", err)
		}
		if _, err := f.svc.TPMChallenge(ctx, d.challengeRequest(t, serial, "ff:ff:ff:ff:ff:ff")); !errors.Is(err, provision.ErrInvalidArgument) {
			t.Errorf("bad MAC: %v", err)
		}
	})

	t.Run("same EK re-enrolls and keeps the device id", func(t *testing.T) {
		_, res, err := enroll(t, d, serial)
		if err != nil {
			t.Fatal(err)
		}
		if res.DeviceID != first.DeviceID {
			t.Errorf("device id %s, want %s", res.DeviceID, first.DeviceID)
		}
		old, err := f.store.GetCertificate(ctx, first.Certificate.SerialNumber.Text(16))
		if err != nil || old.Status != registry.CertRevoked {
			t.Errorf("first certificate = %+v, %v; want revoked (superseded)", old, err)
		}
	})

	t.Run("clone: same EK, another serial", func(t *testing.T) {
		before := f.issuer.n.Load()
		_, _, err := enroll(t, d, "SN-TPM-2")
		if !errors.Is(err, provision.ErrCloneSuspect) {
			t.Fatalf("enroll = %v, want ErrCloneSuspect", err)
		}
		if f.issuer.n.Load() != before {
			t.Error("a certificate was signed")
		}
		if ev := lastAudit(t, f.store); ev.Result != registry.ResultDenied || !strings.Contains(ev.Detail, d.ekHash) {
			t.Errorf("audit = %+v", ev)
		}
	})

	if err := d.tp.Close(); err != nil {
		t.Fatal(err)
	}
	t.Run("clone: same serial, another EK; that TPM by pre-registration", func(t *testing.T) {
		// Refused at the challenge, before any TPM work; TPMEnroll runs the
		// same check again, and the store's SameEK rule closes the race.
		other := openSim(t, "0000000000000002", m)
		defer other.tp.Close()
		if other.ekHash == d.ekHash {
			t.Fatal("the two simulators share an EK")
		}
		before := f.issuer.n.Load()
		_, err := f.svc.TPMChallenge(ctx, other.challengeRequest(t, serial, mac))
		if !errors.Is(err, provision.ErrCloneSuspect) {
			t.Fatalf("TPMChallenge = %v, want ErrCloneSuspect", err)
		}
		if ev := lastAudit(t, f.store); ev.Result != registry.ResultDenied || !strings.Contains(ev.Detail, other.ekHash) {
			t.Errorf("audit = %+v", ev)
		}
		dev, err := f.store.GetDeviceBySerial(ctx, mustTenant(t, f.store).ID, serial)
		if err != nil || dev.EKHash != d.ekHash || dev.Status != registry.DeviceActive {
			t.Errorf("device after the clone attempt = %+v, %v", dev, err)
		}
		if f.issuer.n.Load() != before {
			t.Error("a certificate was signed")
		}

		// The second TPM, without an EK certificate, by pre-registration.
		bare := func(serial string, macs ...string) *provision.TPMChallengeRequest {
			req := other.challengeRequest(t, serial, macs...)
			der, err := x509.MarshalPKIXPublicKey(mustParse(t, other.ekCert).PublicKey)
			if err != nil {
				t.Fatal(err)
			}
			req.EKCertDER, req.EKPubDER = nil, der
			return req
		}
		tn := mustTenant(t, f.store)
		if err := f.store.PutPreregistration(ctx, &registry.Preregistration{
			EKHash: other.ekHash, TenantID: tn.ID, Serial: "SN-PRE-1", MACs: []string{"020000000002"}, CreatedBy: "admin:test",
		}, &registry.AuditEvent{TenantID: tn.ID, Actor: "admin:test", Action: "tpm.preregister", Target: other.ekHash, Result: registry.ResultOK}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.TPMChallenge(ctx, bare("SN-PRE-2", "02:00:00:00:00:02")); !errors.Is(err, verify.ErrEKUntrusted) {
			t.Errorf("pre-registered EK, other serial: %v, want ErrEKUntrusted", err)
		}
		if _, err := f.svc.TPMChallenge(ctx, bare("SN-PRE-1", "02:00:00:00:00:03")); !errors.Is(err, verify.ErrEKUntrusted) {
			t.Errorf("pre-registered EK, other MAC: %v, want ErrEKUntrusted", err)
		}
		ch, err := f.svc.TPMChallenge(ctx, bare("SN-PRE-1", "02:00:00:00:00:02"))
		if err != nil {
			t.Fatalf("pre-registered EK: %v", err)
		}
		res, err := f.svc.Enroll(ctx, f.tpm, other.answer(t, ch, "SN-PRE-1", "02:00:00:00:00:02"))
		if err != nil {
			t.Fatal(err)
		}
		if id, err := pki.DeviceIdentity(res.Certificate, "test.devpki"); err != nil || id.EKHash != other.ekHash {
			t.Errorf("identity = %+v, %v", id, err)
		}
	})
	if err := f.store.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := verify.ParseEKCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
