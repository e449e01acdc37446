package sqlstore

/*
// sqlite3_config is SQLite's (compiled in by github.com/mattn/go-sqlite3).
int sqlite3_config(int, ...);

// SQLITE_CONFIG_STMTJRNL_SPILL (sqlite3.h): the statement journal
// spill-to-disk threshold, in bytes.
static int devpki_stmtjrnl_spill(int n) { return sqlite3_config(26, n); }
*/
import "C"

import "fmt"

// StatementJournalSpill is the size up to which SQLite keeps a statement
// journal (the undo of one savepoint: the committer runs each write of a
// group-commit batch in its own) in memory before writing it to a temporary
// file. SQLite's default, 64 KiB, is about 15 pages: a renewal or an
// enrollment modifies a few more (its rows and every index entry they
// move), so each of them spilled its savepoint's journal to disk, two
// write(2)s per page beyond the 64 KiB, a third of the registry's writes.
// Four MiB holds any single-device write; a bulk write past it spills as
// before. Nothing durable lives there: the journal only rolls a failed op
// back inside the open transaction (WAL and synchronous=FULL make the
// commit durable).
const StatementJournalSpill = 4 << 20

// stmtJournalErr is what setting StatementJournalSpill returned: SQLite
// takes global settings only before its first connection opens, so it is
// set when this package is initialised.
var stmtJournalErr = setStatementJournalSpill(StatementJournalSpill)

func setStatementJournalSpill(n int) error {
	if rc := C.devpki_stmtjrnl_spill(C.int(n)); rc != 0 {
		return fmt.Errorf("sqlstore: sqlite3_config(SQLITE_CONFIG_STMTJRNL_SPILL, %d): SQLite error %d", n, int(rc))
	}
	return nil
}
