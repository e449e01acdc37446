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
