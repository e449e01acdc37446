package sqlstore

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
)

// raceCRLNumbers has two stores (two CA replicas) on one database take CRL
// numbers concurrently: every number is distinct.
func raceCRLNumbers(t *testing.T, a, b *Store) {
	ctx := context.Background()
	const per = 25
	var mu sync.Mutex
	seen := map[int64]bool{}
	var wg sync.WaitGroup
	for _, s := range []*Store{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				n, err := s.NextCRLNumber(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[n] {
					t.Errorf("CRL number %d handed out twice", n)
				}
				seen[n] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != 4*per {
		t.Errorf("%d distinct numbers, want %d", len(seen), 4*per)
	}
}

func TestCRLNumberReplicasSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	a := openSQLite(t, path)
	defer a.Close()
	b := openSQLite(t, path)
	defer b.Close()
	raceCRLNumbers(t, a, b)
}

func TestCRLNumberReplicasPostgres(t *testing.T) {
	a, b := newPostgresPair(t)
	raceCRLNumbers(t, a, b)
}
