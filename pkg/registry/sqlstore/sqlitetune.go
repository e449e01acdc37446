package sqlstore

/*
// sqlite3_config is SQLite's (compiled in by github.com/mattn/go-sqlite3).
int sqlite3_config(int, ...);

// SQLITE_CONFIG_STMTJRNL_SPILL (sqlite3.h): the statement journal
// spill-to-disk threshold, in bytes.
static int devpki_stmtjrnl_spill(int n) { return sqlite3_config(26, n); }
*/
import "C"

import (
	"database/sql"
	"fmt"
	"strconv"

	"github.com/mattn/go-sqlite3"
)

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

// WALAutocheckpoint is the WAL size, in pages, at which the writer's commit
// copies the WAL back into the database file (SQLite's default: 1000, 4
// MiB). Every page a commit changed is written twice, to the WAL and at the
// next checkpoint to the file, each checkpoint with two fsyncs; a longer
// WAL folds more commits' changes to the same hot pages (the audit log's
// last page, index pages) into one write and checkpoints less often:
// BenchmarkRenew's CPU per renewal, alternating runs, 15–20% less than at
// 1000 (4000 made no measurable difference). 32 MiB of WAL at most between
// checkpoints: what a crash leaves to replay.
// Durability is the same: a commit is durable once its WAL frames are
// synced, whenever the checkpoint runs.
const WALAutocheckpoint = 8000

// writerDriver is the database/sql driver of the SQLite writer: mattn's,
// with the pragmas that have no DSN parameter set on each new connection.
const writerDriver = "sqlite3_devpki_writer"

func init() {
	sql.Register(writerDriver, &sqlite3.SQLiteDriver{ConnectHook: func(c *sqlite3.SQLiteConn) error {
		if _, err := c.Exec("PRAGMA wal_autocheckpoint = "+strconv.Itoa(WALAutocheckpoint), nil); err != nil {
			return fmt.Errorf("sqlstore: PRAGMA wal_autocheckpoint: %w", err)
		}
		return nil
	}})
}
