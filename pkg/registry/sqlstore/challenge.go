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
	err := s.write(ctx, func(tx *gorm.DB, b *batch) error {
		if _, err := b.exec(sqlSweepChallenges, now); err != nil {
			return fmt.Errorf("sqlstore: sweep TPM challenges: %w", s.translateSQL(err))
		}
		if err := tx.Create(row).Error; err != nil {
			return fmt.Errorf("sqlstore: put TPM challenge %s: %w", c.ID, translate(err))
		}
		return nil
	})
	if err != nil {
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
	var row tpmChallengeRow
	var refused error // the answer when the op itself succeeded
	err := s.write(ctx, func(tx *gorm.DB, _ *batch) error {
		row, refused = tpmChallengeRow{}, nil
		res := tx.Model(&tpmChallengeRow{}).Where("id = ? AND used = ?", id, false).Update("used", true)
		if res.Error != nil {
			return fmt.Errorf("sqlstore: consume TPM challenge %s: %w", id, translate(res.Error))
		}
		if err := tx.Where("id = ?", id).Take(&row).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				refused = registry.ErrChallengeNotFound
				return nil
			}
			return fmt.Errorf("sqlstore: consume TPM challenge %s: %w", id, translate(err))
		}
		switch {
		case res.RowsAffected != 1:
			refused = registry.ErrChallengeUsed
		case !now.Before(row.Expires):
			refused = registry.ErrChallengeExpired
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if refused != nil {
		return nil, fmt.Errorf("sqlstore: consume TPM challenge %q: %w", id, refused)
	}
	return row.domain(), nil
}
