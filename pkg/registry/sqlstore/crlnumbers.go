package sqlstore

import (
	"context"
	"fmt"

	"gorm.io/gorm"
)

// RaiseCRLNumbers moves the full CRL's counter and every partition CRL's
// counter up to floor where they are below it, in one transaction; a counter
// already past floor is left alone. A restored registry calls it so that the
// CRLs it signs next carry numbers above any the CA published after the
// backup was taken (CRL numbers only grow, RFC 5280 §5.2.3). A partition
// first published later starts above the full CRL's counter
// (sqlNextPartNumber), so it is above floor too.
func (s *Store) RaiseCRLNumbers(ctx context.Context, floor int64) error {
	if floor < 0 {
		return fmt.Errorf("sqlstore: raise CRL numbers: negative floor %d", floor)
	}
	return s.write(ctx, func(_ *gorm.DB, b *batch) error {
		if _, err := b.exec("UPDATE crl_counter SET number = ? WHERE id = 1 AND number < ?", floor, floor); err != nil {
			return fmt.Errorf("sqlstore: raise the CRL number: %w", s.translateSQL(err))
		}
		if _, err := b.exec("UPDATE crl_partitions SET number = ? WHERE number < ?", floor, floor); err != nil {
			return fmt.Errorf("sqlstore: raise the partition CRL numbers: %w", s.translateSQL(err))
		}
		return nil
	})
}
