package sqlstore

import (
	"database/sql"
	"fmt"
	"strconv"

	"github.com/mattn/go-sqlite3"
)

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
// with the pragmas that have no DSN parameter set on each new connection
// (a reconnect keeps them):
//
//   - temp_store=MEMORY keeps the sub-journal of each op's SAVEPOINT
//     (committer.go) in memory. It holds the pre-op image of every page the
//     op changes, and by default spills to a temporary file past 64 KiB —
//     which an enrollment or a renewal passes, touching a leaf of each of
//     its b-trees: about 100 extra pwrite calls per enrollment at 100,000
//     devices, a third of a renewal's writes (docs/BENCHMARKS.md). What it
//     holds is bounded by one op's pages; nothing durable lives there: it
//     only rolls a failed op back inside the open transaction.
//   - wal_autocheckpoint = WALAutocheckpoint.
const writerDriver = "sqlite3_devpki_writer"

func init() {
	sql.Register(writerDriver, &sqlite3.SQLiteDriver{ConnectHook: func(c *sqlite3.SQLiteConn) error {
		if _, err := c.Exec("PRAGMA temp_store = MEMORY", nil); err != nil {
			return fmt.Errorf("sqlstore: PRAGMA temp_store: %w", err)
		}
		if _, err := c.Exec("PRAGMA wal_autocheckpoint = "+strconv.Itoa(WALAutocheckpoint), nil); err != nil {
			return fmt.Errorf("sqlstore: PRAGMA wal_autocheckpoint: %w", err)
		}
		return nil
	}})
}
