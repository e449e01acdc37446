package sqlstore

import (
	"context"
	"testing"
)

// TestStatementJournalSpill: the statement journal threshold was taken
// (SQLite accepts it only before it initialises, so this package's init
// ran first), and once a registry is open SQLite refuses global settings:
// the threshold cannot be set late by accident.
func TestStatementJournalSpill(t *testing.T) {
	if stmtJournalErr != nil {
		t.Fatal(stmtJournalErr)
	}
	s := newSQLite(t)
	if err := s.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := setStatementJournalSpill(StatementJournalSpill); err == nil {
		t.Fatal("sqlite3_config after a connection opened succeeded; want SQLITE_MISUSE")
	}
}

// TestWriterPragmas: the writer connection checkpoints at
// WALAutocheckpoint pages and keeps the durable settings of its DSN (WAL,
// synchronous=FULL); readers keep SQLite's defaults and are query-only.
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
	var ronly int
	s.r.Raw("PRAGMA query_only").Scan(&ronly)
	if ronly != 1 {
		t.Errorf("reader: query_only %d, want 1", ronly)
	}
}
