package sqlstore

import (
	"testing"
)

// TestWriterPragmas: the writer connection keeps temporary files (the
// savepoint journals) in memory, checkpoints at WALAutocheckpoint pages
// and keeps the durable settings of its DSN (WAL, synchronous=FULL);
// readers keep SQLite's defaults and are query-only.
func TestWriterPragmas(t *testing.T) {
	s := newSQLite(t)
	var ckpt, sync int
	var mode string
	if err := s.w.Raw("PRAGMA wal_autocheckpoint").Scan(&ckpt).Error; err != nil {
		t.Fatal(err)
	}
	s.w.Raw("PRAGMA synchronous").Scan(&sync)
	s.w.Raw("PRAGMA journal_mode").Scan(&mode)
	if ckpt != WALAutocheckpoint || sync != 2 || mode != "wal" {
		t.Errorf("writer: wal_autocheckpoint %d, synchronous %d, journal_mode %q; want %d, 2 (FULL), wal", ckpt, sync, mode, WALAutocheckpoint)
	}
	var temp int
	s.w.Raw("PRAGMA temp_store").Scan(&temp)
	if temp != 2 {
		t.Errorf("writer: temp_store %d, want 2 (MEMORY: savepoint journals must not spill to files)", temp)
	}
	var ronly int
	s.r.Raw("PRAGMA query_only").Scan(&ronly)
	if ronly != 1 {
		t.Errorf("reader: query_only %d, want 1", ronly)
	}
}
