package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"devpki/pkg/registry"
)

// renewChallengeRow is a pending challenge of an expired certificate's
// renewal (registry.RenewChallenge). Used rows stay until they expire, so
// a replay is told apart from an unknown ID; PutRenewChallenge sweeps
// expired rows.
type renewChallengeRow struct {
	ID         string    `gorm:"primaryKey;size:128"`
	Nonce      []byte    `gorm:"not null"`
	CertSerial string    `gorm:"size:64;not null"`
	Expires    time.Time `gorm:"not null;index"`
	Used       bool      `gorm:"not null;default:false"`
	CreatedAt  time.Time
}

func (renewChallengeRow) TableName() string { return "renew_challenges" }

// sqlSweepRenewChallenges deletes at most registry.MaxChallengeSweep
// expired renewal challenges, oldest first (the form of
// sqlSweepChallenges).
var sqlSweepRenewChallenges = fmt.Sprintf(`DELETE FROM renew_challenges WHERE id IN
	(SELECT id FROM renew_challenges WHERE expires < ? ORDER BY expires LIMIT %d)`, registry.MaxChallengeSweep)

// PutRenewChallenge records c, sweeping expired challenges in the same
// transaction. A zero CreatedAt is set to now.
func (s *Store) PutRenewChallenge(ctx context.Context, c *registry.RenewChallenge) error {
	if c == nil || c.ID == "" || len(c.Nonce) == 0 || c.CertSerial == "" || c.Expires.IsZero() {
		return errors.New("sqlstore: put renewal challenge: ID, nonce, certificate serial and expiry are required")
	}
	now := ts(s.now())
	row := &renewChallengeRow{ID: c.ID, Nonce: c.Nonce, CertSerial: c.CertSerial, Expires: ts(c.Expires), CreatedAt: ts(c.CreatedAt)}
	if row.CreatedAt.IsZero() {
		row.CreatedAt = now
	}
	if err := s.putChallenge(ctx, "renewal challenge "+c.ID, sqlSweepRenewChallenges, now, row); err != nil {
		return err
	}
	c.CreatedAt = row.CreatedAt
	return nil
}

// ConsumeRenewChallenge marks the challenge id used and returns it. As
// ConsumeTPMChallenge, the conditional UPDATE (used = false → true) is the
// single-use guarantee across replicas, and an expired challenge is
// consumed all the same before registry.ErrChallengeExpired is returned.
func (s *Store) ConsumeRenewChallenge(ctx context.Context, id string, now time.Time) (*registry.RenewChallenge, error) {
	row, err := consumeChallenge(s, ctx, "renewal challenge", id, now, func(r *renewChallengeRow) time.Time { return r.Expires })
	if err != nil {
		return nil, err
	}
	return &registry.RenewChallenge{ID: row.ID, Nonce: row.Nonce, CertSerial: row.CertSerial,
		Expires: row.Expires.UTC(), CreatedAt: row.CreatedAt.UTC()}, nil
}
