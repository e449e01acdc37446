package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// newChallenge returns a pending TPM challenge with fresh random fields
// that expires at expires.
func newChallenge(t testing.TB, expires time.Time) *registry.TPMChallenge {
	t.Helper()
	secret := sha256.Sum256([]byte(randHex(t, 32)))
	return &registry.TPMChallenge{
		ID: randHex(t, 16), SecretHash: secret[:], Nonce: []byte(randHex(t, 16)),
		AKPublic: []byte("tpmt-public-" + randHex(t, 8)), EKHash: strings.Repeat("e", 64),
		Binding: []byte(`{"serial":"SN-CH"}`), Expires: expires,
	}
}

func putChallenge(t testing.TB, s registry.Store, c *registry.TPMChallenge) {
	t.Helper()
	if err := s.PutTPMChallenge(context.Background(), c); err != nil {
		t.Fatalf("PutTPMChallenge(%s): %v", c.ID, err)
	}
}

// consumeErr consumes id at now and requires an error wrapping want, and
// none of the other challenge sentinels.
func consumeErr(t testing.TB, s registry.Store, id string, now time.Time, want error) {
	t.Helper()
	got, err := s.ConsumeTPMChallenge(context.Background(), id, now)
	if !errors.Is(err, want) || got != nil {
		t.Fatalf("ConsumeTPMChallenge(%s) = %+v, %v; want %v", id, got, err, want)
	}
	for _, other := range []error{registry.ErrChallengeNotFound, registry.ErrChallengeUsed, registry.ErrChallengeExpired} {
		if other != want && errors.Is(err, other) {
			t.Fatalf("ConsumeTPMChallenge(%s) = %v: wraps %v besides %v", id, err, other, want)
		}
	}
}

// testTPMChallenge: a challenge round-trips, is single use, and neither
// put nor consume writes an audit event; a duplicate ID is refused.
func testTPMChallenge(t *testing.T, s registry.Store) {
	ctx := context.Background()
	auditBefore, _ := auditHead(t, s)
	c := newChallenge(t, time.Now().Add(time.Minute))
	putChallenge(t, s, c)
	if c.CreatedAt.IsZero() {
		t.Error("PutTPMChallenge left CreatedAt zero")
	}
	dup := newChallenge(t, time.Now().Add(time.Minute))
	dup.ID = c.ID
	if err := s.PutTPMChallenge(ctx, dup); !errors.Is(err, registry.ErrAlreadyExists) {
		t.Fatalf("PutTPMChallenge(duplicate ID) = %v, want ErrAlreadyExists", err)
	}

	got, err := s.ConsumeTPMChallenge(ctx, c.ID, time.Now())
	if err != nil {
		t.Fatalf("ConsumeTPMChallenge: %v", err)
	}
	if got.ID != c.ID || !bytes.Equal(got.SecretHash, c.SecretHash) || !bytes.Equal(got.Nonce, c.Nonce) ||
		!bytes.Equal(got.AKPublic, c.AKPublic) || got.EKHash != c.EKHash || !bytes.Equal(got.Binding, c.Binding) ||
		!got.Expires.Equal(c.Expires.Truncate(time.Microsecond)) || got.CreatedAt.IsZero() {
		t.Errorf("ConsumeTPMChallenge = %+v\nwant %+v", got, c)
	}
	consumeErr(t, s, c.ID, time.Now(), registry.ErrChallengeUsed)
	if auditAfter, _ := auditHead(t, s); auditAfter != auditBefore {
		t.Errorf("challenges wrote %d audit events, want none", auditAfter-auditBefore)
	}
	verify(t, s)
}

// testTPMChallengeUnknown: an ID never put is ErrChallengeNotFound, and
// asking does not create it.
func testTPMChallengeUnknown(t *testing.T, s registry.Store) {
	consumeErr(t, s, "no-such-challenge", time.Now(), registry.ErrChallengeNotFound)
	consumeErr(t, s, "no-such-challenge", time.Now(), registry.ErrChallengeNotFound)
}

// testTPMChallengeExpired: a challenge consumed at or after its expiry is
// refused and consumed.
func testTPMChallengeExpired(t *testing.T, s registry.Store) {
	c := newChallenge(t, time.Now().Add(time.Hour))
	putChallenge(t, s, c)
	consumeErr(t, s, c.ID, c.Expires, registry.ErrChallengeExpired)
	consumeErr(t, s, c.ID, time.Now(), registry.ErrChallengeUsed)

	late := newChallenge(t, time.Now().Add(time.Hour))
	putChallenge(t, s, late)
	consumeErr(t, s, late.ID, late.Expires.Add(time.Second), registry.ErrChallengeExpired)
}

// testTPMChallengeSingleUse: of many concurrent consumers of one challenge
// exactly one gets it; every other is told it is used.
func testTPMChallengeSingleUse(t *testing.T, s registry.Store) {
	const n = 30
	c := newChallenge(t, time.Now().Add(time.Minute))
	putChallenge(t, s, c)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			var got *registry.TPMChallenge
			got, errs[i] = s.ConsumeTPMChallenge(context.Background(), c.ID, time.Now())
			if errs[i] == nil && (got == nil || !bytes.Equal(got.SecretHash, c.SecretHash)) {
				errs[i] = errors.New("consumed, but not the challenge put")
			}
		}()
	}
	close(start)
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, registry.ErrChallengeUsed):
			t.Errorf("consumer %d: %v, want nil or ErrChallengeUsed", i, err)
		}
	}
	if won != 1 {
		t.Errorf("%d of %d concurrent consumers got the challenge, want exactly 1", won, n)
	}
}

// testTPMChallengeSweep: a put deletes challenges that have expired and
// keeps live ones, used or not. (The store's clock is the real time here,
// so an expired challenge is one put already expired.)
func testTPMChallengeSweep(t *testing.T, s registry.Store) {
	now := time.Now()
	var expired []*registry.TPMChallenge
	for range 3 {
		c := newChallenge(t, now.Add(-time.Minute))
		putChallenge(t, s, c)
		expired = append(expired, c)
	}
	live, liveUsed := newChallenge(t, now.Add(time.Hour)), newChallenge(t, now.Add(time.Hour))
	putChallenge(t, s, live) // sweeps the expired ones
	putChallenge(t, s, liveUsed)
	if _, err := s.ConsumeTPMChallenge(context.Background(), liveUsed.ID, now); err != nil {
		t.Fatal(err)
	}
	putChallenge(t, s, newChallenge(t, now.Add(time.Hour))) // sweeps again

	for _, c := range expired {
		consumeErr(t, s, c.ID, now.Add(-2*time.Minute), registry.ErrChallengeNotFound)
	}
	consumeErr(t, s, liveUsed.ID, now, registry.ErrChallengeUsed)
	if _, err := s.ConsumeTPMChallenge(context.Background(), live.ID, now); err != nil {
		t.Errorf("a live challenge did not survive the sweep: %v", err)
	}
}
