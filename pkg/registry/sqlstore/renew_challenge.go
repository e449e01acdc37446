package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

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
	err := s.write(ctx, func(tx *gorm.DB, b *batch) error {
		if _, err := b.exec(sqlSweepRenewChallenges, now); err != nil {
			return fmt.Errorf("sqlstore: sweep renewal challenges: %w", s.translateSQL(err))
		}
		if err := tx.Create(row).Error; err != nil {
			return fmt.Errorf("sqlstore: put renewal challenge %s: %w", c.ID, translate(err))
		}
		return nil
	})
	if err != nil {
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
	var row renewChallengeRow
	var refused error // the answer when the op itself succeeded
	err := s.write(ctx, func(tx *gorm.DB, _ *batch) error {
		row, refused = renewChallengeRow{}, nil
		res := tx.Model(&renewChallengeRow{}).Where("id = ? AND used = ?", id, false).Update("used", true)
		if res.Error != nil {
			return fmt.Errorf("sqlstore: consume renewal challenge %s: %w", id, translate(res.Error))
		}
		if err := tx.Where("id = ?", id).Take(&row).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				refused = registry.ErrChallengeNotFound
				return nil
			}
			return fmt.Errorf("sqlstore: consume renewal challenge %s: %w", id, translate(err))
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
		return nil, fmt.Errorf("sqlstore: consume renewal challenge %q: %w", id, refused)
	}
	return &registry.RenewChallenge{ID: row.ID, Nonce: row.Nonce, CertSerial: row.CertSerial,
		Expires: row.Expires.UTC(), CreatedAt: row.CreatedAt.UTC()}, nil
}
