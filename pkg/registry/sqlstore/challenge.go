package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"devpki/pkg/registry"
)

// sqlSweepChallenges deletes at most registry.MaxChallengeSweep expired
// challenges, oldest first. The subquery form (rather than DELETE ...
// LIMIT) works on SQLite and PostgreSQL alike.
var sqlSweepChallenges = fmt.Sprintf(`DELETE FROM tpm_challenges WHERE id IN
	(SELECT id FROM tpm_challenges WHERE expires < ? ORDER BY expires LIMIT %d)`, registry.MaxChallengeSweep)

// PutTPMChallenge implements registry.Store. A zero CreatedAt is set to now.
func (s *Store) PutTPMChallenge(ctx context.Context, c *registry.TPMChallenge) error {
	if c == nil || c.ID == "" || len(c.SecretHash) == 0 || c.Expires.IsZero() {
		return errors.New("sqlstore: put TPM challenge: ID, secret hash and expiry are required")
	}
	row := fromTPMChallenge(c)
	now := ts(s.now())
	if row.CreatedAt.IsZero() {
		row.CreatedAt = now
	}
	if err := s.putChallenge(ctx, "TPM challenge "+c.ID, sqlSweepChallenges, now, row); err != nil {
		return err
	}
	c.CreatedAt = row.CreatedAt
	return nil
}

// ConsumeTPMChallenge implements registry.Store. The conditional UPDATE
// (used = false → true) is the single-use guarantee: SQLite has one writer
// at a time across processes (BEGIN IMMEDIATE), and on PostgreSQL a second
// UPDATE of the row waits for the first transaction and then finds used
// already true. An expired challenge is marked used in a committed
// transaction before ErrChallengeExpired is returned.
func (s *Store) ConsumeTPMChallenge(ctx context.Context, id string, now time.Time) (*registry.TPMChallenge, error) {
	row, err := consumeChallenge(s, ctx, "TPM challenge", id, now, func(r *tpmChallengeRow) time.Time { return r.Expires })
	if err != nil {
		return nil, err
	}
	return row.domain(), nil
}

// putChallenge records a challenge row, sweeping expired ones of its table
// (sweep) in the same transaction.
func (s *Store) putChallenge(ctx context.Context, what, sweep string, now time.Time, row any) error {
	return s.write(ctx, func(tx *gorm.DB, b *batch) error {
		if _, err := b.exec(sweep, now); err != nil {
			return fmt.Errorf("sqlstore: sweep before %s: %w", what, s.translateSQL(err))
		}
		if err := tx.Create(row).Error; err != nil {
			return fmt.Errorf("sqlstore: put %s: %w", what, translate(err))
		}
		return nil
	})
}

// consumeChallenge marks challenge id used and returns its row. The
// conditional UPDATE (used = false → true) is the single-use guarantee:
// SQLite has one writer at a time across processes (BEGIN IMMEDIATE), and on
// PostgreSQL a second UPDATE of the row waits for the first transaction and
// then finds used already true. An expired challenge is marked used in a
// committed transaction before registry.ErrChallengeExpired is returned.
func consumeChallenge[T any](s *Store, ctx context.Context, what, id string, now time.Time, expires func(*T) time.Time) (*T, error) {
	var row T
	var refused error // the answer when the op itself succeeded
	err := s.write(ctx, func(tx *gorm.DB, _ *batch) error {
		var zero T
		row, refused = zero, nil
		res := tx.Model(new(T)).Where("id = ? AND used = ?", id, false).Update("used", true)
		if res.Error != nil {
			return fmt.Errorf("sqlstore: consume %s %s: %w", what, id, translate(res.Error))
		}
		if err := tx.Where("id = ?", id).Take(&row).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				refused = registry.ErrChallengeNotFound
				return nil
			}
			return fmt.Errorf("sqlstore: consume %s %s: %w", what, id, translate(err))
		}
		switch {
		case res.RowsAffected != 1:
			refused = registry.ErrChallengeUsed
		case !now.Before(expires(&row)):
			refused = registry.ErrChallengeExpired
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if refused != nil {
		return nil, fmt.Errorf("sqlstore: consume %s %q: %w", what, id, refused)
	}
	return &row, nil
}
