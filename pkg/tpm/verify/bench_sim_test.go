//go:build tpmsimulator

package verify

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// The benchmarks make their evidence once in the simulator and then time only
// the server's work.

func BenchmarkNewChallenge(b *testing.B) {
	ctx := context.Background()
	ekPub := simEKPub(b)
	_, params := simAK(b)
	c := NewChallenger(Config{Store: &MemoryStore{Max: 1 << 30}})
	req := &ChallengeRequest{EKPub: ekPub, AK: params}
	for b.Loop() {
		if _, err := c.NewChallenge(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkComplete replays one real answer against fresh copies of its
// challenge; each iteration includes one MemoryStore.Put.
func BenchmarkComplete(b *testing.B) {
	ctx := context.Background()
	ekPub := simEKPub(b)
	ak, params := simAK(b)
	store := &MemoryStore{Max: 1 << 30}
	c := NewChallenger(Config{Store: store})
	ch, err := c.NewChallenge(ctx, &ChallengeRequest{EKPub: ekPub, AK: params})
	if err != nil {
		b.Fatal(err)
	}
	secret := activate(b, ak, ch)
	cp, csr := simKey(b, ak, ch.Nonce)
	tmpl, err := store.Consume(ctx, ch.ID, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		p := *tmpl
		p.ID = fmt.Sprint(i)
		i++
		if err := store.Put(ctx, &p); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Complete(ctx, p.ID, secret, cp, csr); err != nil {
			b.Fatal(err)
		}
	}
}
