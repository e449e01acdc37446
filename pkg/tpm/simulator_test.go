//go:build tpmsimulator

package tpm

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"

	"github.com/smallstep/go-attestation/attest"
)

// testSeed makes the simulator's seeds the same in every Open, so blobs
// written by one Open load in the next. Insecure: tests only.
const testSeed = "simulator:0011223344556677"

// The simulator is one per process (a second Open waits for the first to
// close), so these tests never run in parallel and close before reopening.

func TestSimulatorEnrollAndReload(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tp, err := Open(ctx, testSeed, Options{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ek, err := tp.EK(ctx)
	if err != nil {
		tp.Close()
		t.Fatal(err)
	}
	if ek.Certificate != nil {
		t.Errorf("simulator EK has a certificate")
	}
	key := checkEnrollment(t, tp)
	checkStateFiles(t, dir)
	t.Run("TLS13", func(t *testing.T) { checkTLS(t, key, tls.VersionTLS13) })
	t.Run("TLS12", func(t *testing.T) { checkTLS(t, key, tls.VersionTLS12) })
	if err := tp.ResetLockout(ctx); err != nil {
		t.Errorf("ResetLockout: %v", err)
	}
	pub := key.Public()
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}

	checkReload(t, testSeed, dir, pub)

	// Same seed, same EK.
	tp2, err := Open(ctx, testSeed, Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer tp2.Close()
	ek2, err := tp2.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ek2.Fingerprint() != ek.Fingerprint() {
		t.Fatalf("seeded simulator EK changed: %s, then %s", ek.Fingerprint(), ek2.Fingerprint())
	}
}

func TestSimulatorBadInput(t *testing.T) {
	ctx := context.Background()
	tp, err := Open(ctx, "simulator", Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	for _, name := range []string{"", "AK", "a/b", "../etc"} {
		if _, err := tp.EnsureAK(ctx, name); !errors.Is(err, ErrBadName) {
			t.Errorf("EnsureAK(%q) = %v, want ErrBadName", name, err)
		}
		if _, err := tp.AttestedKey(ctx, "ak1", name, []byte("n")); !errors.Is(err, ErrBadName) {
			t.Errorf("AttestedKey(key %q) = %v, want ErrBadName", name, err)
		}
		if _, err := tp.LoadKey(ctx, name); !errors.Is(err, ErrBadName) {
			t.Errorf("LoadKey(%q) = %v, want ErrBadName", name, err)
		}
	}
	if _, err := tp.AttestedKey(ctx, "no-such-ak", "k", []byte("n")); !errors.Is(err, ErrNotFound) {
		t.Errorf("AttestedKey with a missing AK = %v, want ErrNotFound", err)
	}
	if _, err := tp.EnsureAK(ctx, "ak1"); err != nil {
		t.Fatal(err)
	}
	for _, n := range [][]byte{nil, make([]byte, MaxNonceSize+1)} {
		if _, err := tp.AttestedKey(ctx, "ak1", "k", n); !errors.Is(err, ErrBadNonce) {
			t.Errorf("AttestedKey with a %d-byte nonce = %v, want ErrBadNonce", len(n), err)
		}
	}
	if _, err := tp.AttestedKey(ctx, "ak1", "k", make([]byte, MaxNonceSize)); err != nil {
		t.Errorf("AttestedKey with a %d-byte nonce: %v", MaxNonceSize, err)
	}
	// A credential made for another AK does not activate.
	ak1, err := tp.EnsureAK(ctx, "ak1")
	if err != nil {
		t.Fatal(err)
	}
	ak2, err := tp.EnsureAK(ctx, "ak2")
	if err != nil {
		t.Fatal(err)
	}
	p2, err := ak2.AttestationParameters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := tp.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ap := attest.ActivationParameters{TPMVersion: attest.TPMVersion20, EK: ek.Public, AK: p2}
	_, ec, err := ap.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ak1.ActivateCredential(ctx, *ec); err == nil {
		t.Error("ak1 activated a credential made for ak2")
	}
	if _, err := ak2.ActivateCredential(ctx, *ec); err != nil {
		t.Errorf("ak2 after ak1's failure: %v", err)
	}
}

func BenchmarkSimulatorAttestedKey(b *testing.B) {
	tp, err := Open(context.Background(), "simulator", Options{StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	benchAttestedKey(b, tp)
}

func BenchmarkSimulatorSign(b *testing.B) {
	tp, err := Open(context.Background(), "simulator", Options{StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	benchSign(b, tp)
}
