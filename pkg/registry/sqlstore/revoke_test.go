package sqlstore

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"devpki/pkg/registry"
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

// racePartitionNumbers has two stores (two CA replicas) on one database
// take numbers of two partition CRLs concurrently: per partition, each
// store sees its numbers strictly increase and no number is handed out
// twice; a revocation through one shows in the other's revisions.
func racePartitionNumbers(t *testing.T, a, b *Store) {
	ctx := context.Background()
	const per = 20
	var mu sync.Mutex
	seen := map[[2]int64]bool{}
	var wg sync.WaitGroup
	for i, s := range []*Store{a, b, a, b} {
		part := 1 + i%2
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last int64
			for range per {
				n, err := s.NextPartitionCRLNumber(ctx, part)
				if err != nil {
					t.Error(err)
					return
				}
				if n <= last {
					t.Errorf("partition %d: number %d after %d", part, n, last)
				}
				last = n
				mu.Lock()
				if seen[[2]int64{int64(part), n}] {
					t.Errorf("partition %d: number %d handed out twice", part, n)
				}
				seen[[2]int64{int64(part), n}] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != 4*per {
		t.Errorf("%d distinct numbers, want %d", len(seen), 4*per)
	}
	before, err := b.CRLRevisions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &registry.Certificate{Serial: "abc123", Kind: registry.KindClient, Subject: "CN=x", CRLPartition: 2,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DER: []byte{1}}
	if err := a.RecordCertificate(ctx, c, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.RevokeCertificate(ctx, c.Serial, registry.ReasonKeyCompromise, time.Time{}, nil); err != nil {
		t.Fatal(err)
	}
	after, err := b.CRLRevisions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.All != before.All+1 || after.Partitions[2] != before.Partitions[2]+1 {
		t.Errorf("revisions read by the other store %+v → %+v, want all and partition 2 bumped", before, after)
	}
}

func TestPartitionNumbersReplicasSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	a := openSQLite(t, path)
	defer a.Close()
	b := openSQLite(t, path)
	defer b.Close()
	racePartitionNumbers(t, a, b)
}

func TestPartitionNumbersReplicasPostgres(t *testing.T) {
	a, b := newPostgresPair(t)
	racePartitionNumbers(t, a, b)
}
