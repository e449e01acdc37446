package sqlstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// TestTPMChallengeAcrossStores has two stores on one database (two CA
// replicas) race to consume the same challenges: each is consumed exactly
// once, whichever store put it.
func TestTPMChallengeAcrossStores(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "registry.db")
		a, b := openSQLite(t, path), openSQLite(t, path)
		defer a.Close()
		defer b.Close()
		raceChallenges(t, a, b)
	})
	t.Run("postgres", func(t *testing.T) {
		a, b := newPostgresPair(t)
		raceChallenges(t, a, b)
	})
}

func raceChallenges(t *testing.T, a, b *Store) {
	ctx := context.Background()
	const challenges, consumers = 5, 10
	for i := range challenges {
		sum := sha256.Sum256([]byte(fmt.Sprint("secret", i)))
		s := a
		if i%2 == 1 {
			s = b
		}
		c := &registry.TPMChallenge{ID: fmt.Sprint("ch-", i), SecretHash: sum[:], Nonce: []byte("n"), Expires: time.Now().Add(time.Minute)}
		if err := s.PutTPMChallenge(ctx, c); err != nil {
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
			id := fmt.Sprint("ch-", i%challenges)
			<-start
			_, err := s.ConsumeTPMChallenge(ctx, id, time.Now())
			switch {
			case err == nil:
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
		if id := fmt.Sprint("ch-", i); won[id] != 1 {
			t.Errorf("challenge %s consumed %d times, want exactly once", id, won[id])
		}
	}
}
