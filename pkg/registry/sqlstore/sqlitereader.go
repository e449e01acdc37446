package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"

	"github.com/mattn/go-sqlite3"
	"gorm.io/gorm"
)

// readerDriver is the database/sql driver of the SQLite read pools:
// mattn's, except that a bounded read (see bounded) steps its rows on the
// calling goroutine.
//
// Given a context that can end, mattn/go-sqlite3 steps every row of a query
// on a goroutine of its own, so that it can interrupt the step when the
// context ends: a goroutine start, two switches and a thread woken per row.
// A page of 100 rows paid that 100 times: without it the server's CPU per
// admin list request is 18–34% lower at a million devices
// (docs/BENCHMARKS.md). A bounded read is one page of at most 1000 rows
// through an index (TestListPlans), or a device's few certificates; a
// single-row lookup (readRow) goes further and drops its context's end
// once checked, database/sql's watcher included. Each step is
// microseconds, so there is nothing to interrupt inside one. Such a query
// still ends with its context: the context is checked before it runs,
// database/sql waits for a connection under it, and when it ends mid-query
// database/sql closes the rows between two steps.
const readerDriver = "sqlite3_devpki_reader"

func init() {
	sql.Register(readerDriver, &boundedReadDriver{})
}

// boundedKey marks a context whose reads are bounded (bounded).
type boundedKey struct{}

// bounded marks ctx for a bounded read: one row, or one page through an
// index. On SQLite its rows are stepped on the caller's goroutine
// (readerDriver); elsewhere the mark means nothing.
func bounded(ctx context.Context) context.Context {
	return context.WithValue(ctx, boundedKey{}, true)
}

// rdBounded is rd for a bounded read.
func (s *Store) rdBounded(ctx context.Context) *gorm.DB {
	return s.rd(bounded(ctx))
}

// stepContext is the context mattn runs a query's steps under: ctx, without
// its end for a bounded read that has not ended yet.
func stepContext(ctx context.Context) context.Context {
	if ctx.Value(boundedKey{}) == nil || ctx.Err() != nil {
		return ctx
	}
	return context.WithoutCancel(ctx)
}

type boundedReadDriver struct{ sqlite3.SQLiteDriver }

func (d *boundedReadDriver) Open(dsn string) (driver.Conn, error) {
	c, err := d.SQLiteDriver.Open(dsn)
	if err != nil {
		return nil, err
	}
	sc, ok := c.(*sqlite3.SQLiteConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("sqlstore: sqlite reader: unexpected connection type %T", c)
	}
	return &boundedReadConn{sc}, nil
}

type boundedReadConn struct{ *sqlite3.SQLiteConn }

func (c *boundedReadConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return c.SQLiteConn.QueryContext(stepContext(ctx), query, args)
}

func (c *boundedReadConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	st, err := c.SQLiteConn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	sst, ok := st.(*sqlite3.SQLiteStmt)
	if !ok {
		st.Close()
		return nil, fmt.Errorf("sqlstore: sqlite reader: unexpected statement type %T", st)
	}
	return &boundedReadStmt{sst}, nil
}

func (c *boundedReadConn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

type boundedReadStmt struct{ *sqlite3.SQLiteStmt }

func (s *boundedReadStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	return s.SQLiteStmt.QueryContext(stepContext(ctx), args)
}
