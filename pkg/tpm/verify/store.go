package verify

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Pending is the server-side half of an outstanding challenge. None of it is
// sent to the device except ID, Nonce and Expires.
type Pending struct {
	// ID names the challenge.
	ID string
	// SecretHash is the SHA-256 of the activation secret the device must
	// recover with its TPM; the secret itself is not kept, so a persistent
	// Store holds nothing that answers the challenge.
	SecretHash []byte
	// Nonce must come back as the certify extraData.
	Nonce []byte
	// AKPublic is the TPMT_PUBLIC of the AK that was checked and bound into
	// the credential; only this AK may sign the certification.
	AKPublic []byte
	// EKHash is EKHash of the EK the credential was encrypted to.
	EKHash string
	// Binding is ChallengeRequest.Binding, opaque to this package.
	Binding []byte
	// Expires is when the challenge stops being accepted.
	Expires time.Time
}

// Store keeps pending challenges. Implementations must be safe for
// concurrent use, and Consume must be atomic: of any number of concurrent
// calls for one ID, at most one returns the challenge.
type Store interface {
	// Put records a new challenge.
	Put(ctx context.Context, p *Pending) error
	// Consume marks the challenge used and returns it. It returns an error
	// wrapping ErrChallengeNotFound for an unknown ID, ErrChallengeUsed for
	// one already consumed, and ErrChallengeExpired when now is past its
	// expiry (which also consumes it).
	Consume(ctx context.Context, id string, now time.Time) (*Pending, error)
}

// ErrStoreFull is returned by MemoryStore.Put when it holds Max live
// challenges.
var ErrStoreFull = errors.New("tpm verify: too many pending challenges")

// MemoryStore is an in-memory Store for a single replica. A consumed
// challenge is remembered until it expires, so a replay is reported as
// ErrChallengeUsed rather than ErrChallengeNotFound.
type MemoryStore struct {
	// Max bounds the number of challenges held; zero means 100000.
	Max int
	// Now is the clock used to drop expired challenges when the store is
	// full; nil means time.Now.
	Now func() time.Time

	mu sync.Mutex
	m  map[string]*memEntry
}

type memEntry struct {
	p    *Pending
	used bool
}

// NewMemoryStore returns an empty MemoryStore with the default bound.
func NewMemoryStore() *MemoryStore { return &MemoryStore{} }

// Put implements Store. It drops expired entries when the store is full.
func (s *MemoryStore) Put(_ context.Context, p *Pending) error {
	limit := s.Max
	if limit <= 0 {
		limit = 100000
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[string]*memEntry)
	}
	if _, ok := s.m[p.ID]; ok {
		return fmt.Errorf("put challenge %q: duplicate ID", p.ID)
	}
	if len(s.m) >= limit {
		now := time.Now
		if s.Now != nil {
			now = s.Now
		}
		s.sweepLocked(now())
		if len(s.m) >= limit {
			return fmt.Errorf("put challenge %q: %w", p.ID, ErrStoreFull)
		}
	}
	s.m[p.ID] = &memEntry{p: p}
	return nil
}

// Consume implements Store.
func (s *MemoryStore) Consume(_ context.Context, id string, now time.Time) (*Pending, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[id]
	switch {
	case !ok:
		return nil, fmt.Errorf("consume challenge %q: %w", id, ErrChallengeNotFound)
	case e.used:
		return nil, fmt.Errorf("consume challenge %q: %w", id, ErrChallengeUsed)
	case !now.Before(e.p.Expires):
		delete(s.m, id)
		return nil, fmt.Errorf("consume challenge %q: %w", id, ErrChallengeExpired)
	}
	e.used = true
	return e.p, nil
}

// Sweep removes challenges that expired before now.
func (s *MemoryStore) Sweep(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(now)
}

func (s *MemoryStore) sweepLocked(now time.Time) {
	for id, e := range s.m {
		if !now.Before(e.p.Expires) {
			delete(s.m, id)
		}
	}
}

// Len returns the number of challenges held, used or not.
func (s *MemoryStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
