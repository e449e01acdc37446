package provision

import (
	"context"
	"errors"
	"fmt"
	"time"

	"devpki/pkg/registry"
	"devpki/pkg/tpm/verify"
)

// ChallengeRecorder is the part of the registry that keeps pending TPM
// challenges (registry.Store implements it).
type ChallengeRecorder interface {
	PutTPMChallenge(ctx context.Context, c *registry.TPMChallenge) error
	ConsumeTPMChallenge(ctx context.Context, id string, now time.Time) (*registry.TPMChallenge, error)
}

// NewChallengeStore returns a verify.Store that keeps challenges in the
// registry, so that a challenge issued by one replica can be completed on
// any other sharing the database. Nothing is kept in memory. The registry's
// ErrChallengeNotFound, ErrChallengeUsed and ErrChallengeExpired come back
// as the verify sentinels of the same name (wrapping both).
func NewChallengeStore(s ChallengeRecorder) verify.Store {
	return challengeStore{s: s}
}

type challengeStore struct{ s ChallengeRecorder }

// Put implements verify.Store.
func (c challengeStore) Put(ctx context.Context, p *verify.Pending) error {
	return c.s.PutTPMChallenge(ctx, &registry.TPMChallenge{
		ID: p.ID, SecretHash: p.SecretHash, Nonce: p.Nonce, AKPublic: p.AKPublic,
		EKHash: p.EKHash, Binding: p.Binding, Expires: p.Expires,
	})
}

// Consume implements verify.Store.
func (c challengeStore) Consume(ctx context.Context, id string, now time.Time) (*verify.Pending, error) {
	r, err := c.s.ConsumeTPMChallenge(ctx, id, now)
	if err != nil {
		for _, m := range []struct{ from, to error }{
			{registry.ErrChallengeNotFound, verify.ErrChallengeNotFound},
			{registry.ErrChallengeUsed, verify.ErrChallengeUsed},
			{registry.ErrChallengeExpired, verify.ErrChallengeExpired},
		} {
			if errors.Is(err, m.from) {
				return nil, fmt.Errorf("%w: %w", m.to, err)
			}
		}
		return nil, err
	}
	return &verify.Pending{
		ID: r.ID, SecretHash: r.SecretHash, Nonce: r.Nonce, AKPublic: r.AKPublic,
		EKHash: r.EKHash, Binding: r.Binding, Expires: r.Expires,
	}, nil
}
