package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// TestRenewChallengeAcrossStores: two stores on one database (two CA
// replicas) race to consume the same renewal challenges: each is consumed
// exactly once, whichever store put it; an expired one is refused, an
// unknown one too, and the sweep removes expired rows.
func TestRenewChallengeAcrossStores(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "registry.db")
		a, b := openSQLite(t, path), openSQLite(t, path)
		defer a.Close()
		defer b.Close()
		raceRenewChallenges(t, a, b)
	})
	t.Run("postgres", func(t *testing.T) {
		a, b := newPostgresPair(t)
		raceRenewChallenges(t, a, b)
	})
}

func raceRenewChallenges(t *testing.T, a, b *Store) {
	ctx := context.Background()
	if err := a.PutRenewChallenge(ctx, &registry.RenewChallenge{ID: "x"}); err == nil {
		t.Fatal("a challenge without nonce, serial and expiry was stored")
	}
	const challenges, consumers = 5, 10
	for i := range challenges {
		s := a
		if i%2 == 1 {
			s = b
		}
		c := &registry.RenewChallenge{ID: fmt.Sprint("rc-", i), Nonce: []byte("nonce"), CertSerial: fmt.Sprint("ab", i),
			Expires: time.Now().Add(time.Minute)}
		if err := s.PutRenewChallenge(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	won := map[string]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range challenges * consumers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := a
			if i%2 == 1 {
				s = b
			}
			id := fmt.Sprint("rc-", i%challenges)
			<-start
			c, err := s.ConsumeRenewChallenge(ctx, id, time.Now())
			switch {
			case err == nil:
				if c.CertSerial != fmt.Sprint("ab", i%challenges) || string(c.Nonce) != "nonce" {
					t.Errorf("consumed %+v", c)
				}
				mu.Lock()
				won[id]++
				mu.Unlock()
			case !errors.Is(err, registry.ErrChallengeUsed):
				t.Errorf("consume %s: %v, want nil or ErrChallengeUsed", id, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	for i := range challenges {
		if id := fmt.Sprint("rc-", i); won[id] != 1 {
			t.Errorf("challenge %s consumed %d times, want exactly once", id, won[id])
		}
	}
	old := &registry.RenewChallenge{ID: "old", Nonce: []byte("n"), CertSerial: "cd", Expires: time.Now().Add(-time.Minute)}
	if err := a.PutRenewChallenge(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ConsumeRenewChallenge(ctx, "old", time.Now()); !errors.Is(err, registry.ErrChallengeExpired) {
		t.Fatalf("expired challenge: %v", err)
	}
	if _, err := b.ConsumeRenewChallenge(ctx, "nope", time.Now()); !errors.Is(err, registry.ErrChallengeNotFound) {
		t.Fatalf("unknown challenge: %v", err)
	}
	// The next put sweeps the expired row: it is then unknown.
	if err := a.PutRenewChallenge(ctx, &registry.RenewChallenge{ID: "new", Nonce: []byte("n"), CertSerial: "cd",
		Expires: time.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ConsumeRenewChallenge(ctx, "old", time.Now()); !errors.Is(err, registry.ErrChallengeNotFound) {
		t.Fatalf("swept challenge: %v", err)
	}
}
