package verify

import (
	"context"
	"crypto/x509"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smallstep/go-attestation/attest"
)

// fakeClock is a settable clock for tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestMemoryStore(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	s := &MemoryStore{Now: clock.Now}
	put := func(id string, ttl time.Duration) {
		t.Helper()
		if err := s.Put(ctx, &Pending{ID: id, Expires: clock.Now().Add(ttl)}); err != nil {
			t.Fatal(err)
		}
	}
	put("a", time.Minute)
	put("b", time.Minute)
	if err := s.Put(ctx, &Pending{ID: "a"}); err == nil {
		t.Fatal("duplicate ID accepted")
	}
	if p, err := s.Consume(ctx, "a", clock.Now()); err != nil || p.ID != "a" {
		t.Fatalf("first Consume = %v, %v", p, err)
	}
	if _, err := s.Consume(ctx, "a", clock.Now()); !errors.Is(err, ErrChallengeUsed) {
		t.Fatalf("second Consume = %v, want ErrChallengeUsed", err)
	}
	if _, err := s.Consume(ctx, "nope", clock.Now()); !errors.Is(err, ErrChallengeNotFound) {
		t.Fatalf("Consume(unknown) = %v, want ErrChallengeNotFound", err)
	}
	clock.Advance(time.Minute) // exactly at expiry: refused
	if _, err := s.Consume(ctx, "b", clock.Now()); !errors.Is(err, ErrChallengeExpired) {
		t.Fatalf("Consume(expired) = %v, want ErrChallengeExpired", err)
	}
	s.Sweep(clock.Now())
	if n := s.Len(); n != 0 {
		t.Fatalf("Len after sweep = %d, want 0", n)
	}
}

func TestMemoryStoreBound(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	s := &MemoryStore{Max: 2, Now: clock.Now}
	for _, id := range []string{"a", "b"} {
		if err := s.Put(ctx, &Pending{ID: id, Expires: clock.Now().Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(ctx, &Pending{ID: "c", Expires: clock.Now().Add(time.Minute)}); !errors.Is(err, ErrStoreFull) {
		t.Fatalf("Put over Max = %v, want ErrStoreFull", err)
	}
	clock.Advance(time.Minute)
	if err := s.Put(ctx, &Pending{ID: "c", Expires: clock.Now().Add(time.Minute)}); err != nil {
		t.Fatalf("Put after expiry = %v, want the expired ones swept", err)
	}
}

func TestMemoryStoreConsumeOnce(t *testing.T) {
	ctx := context.Background()
	s := NewMemoryStore()
	now := time.Now()
	if err := s.Put(ctx, &Pending{ID: "x", Expires: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if _, err := s.Consume(ctx, "x", now); err == nil {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d concurrent Consume calls succeeded, want 1", wins.Load())
	}
}

// TestCompleteChallengeState covers what Complete refuses before it looks
// at any TPM evidence; the simulator tests cover the rest.
func TestCompleteChallengeState(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	store := &MemoryStore{Now: clock.Now}
	c := NewChallenger(Config{Store: store, Now: clock.Now})
	secret := []byte("0123456789abcdef0123456789abcdef")
	put := func(id string) {
		t.Helper()
		if err := store.Put(ctx, &Pending{ID: id, SecretHash: hashSecret(secret), Expires: clock.Now().Add(DefaultTTL)}); err != nil {
			t.Fatal(err)
		}
	}
	complete := func(id string, s []byte) error {
		_, err := c.Complete(ctx, id, s, attest.CertificationParameters{}, &x509.CertificateRequest{})
		return err
	}
	put("wrong")
	if err := complete("wrong", []byte("not the secret")); !errors.Is(err, ErrActivation) {
		t.Fatalf("wrong secret: %v, want ErrActivation", err)
	}
	if err := complete("wrong", secret); !errors.Is(err, ErrChallengeUsed) {
		t.Fatalf("retry after a wrong secret: %v, want ErrChallengeUsed", err)
	}
	put("empty")
	if err := complete("empty", nil); !errors.Is(err, ErrActivation) {
		t.Fatalf("empty secret: %v, want ErrActivation", err)
	}
	put("late")
	clock.Advance(DefaultTTL)
	if err := complete("late", secret); !errors.Is(err, ErrChallengeExpired) {
		t.Fatalf("expired: %v, want ErrChallengeExpired", err)
	}
	if err := complete("never", secret); !errors.Is(err, ErrChallengeNotFound) {
		t.Fatalf("unknown: %v, want ErrChallengeNotFound", err)
	}
}

func TestNewChallengeRefusesBadInput(t *testing.T) {
	c := NewChallenger(Config{})
	ctx := context.Background()
	if _, err := c.NewChallenge(ctx, nil); !errors.Is(err, ErrAKInvalid) {
		t.Fatalf("nil request: %v", err)
	}
	if _, err := c.NewChallenge(ctx, &ChallengeRequest{EKPub: newECKey(t).Public()}); !errors.Is(err, ErrEKUntrusted) {
		t.Fatalf("ECC EK: %v, want ErrEKUntrusted", err)
	}
	if _, err := c.NewChallenge(ctx, &ChallengeRequest{EKPub: testRSAKey(t).Public()}); !errors.Is(err, ErrAKInvalid) {
		t.Fatalf("empty AK: %v, want ErrAKInvalid", err)
	}
}
