package sqlstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// TestReadPoolsStepBoundedReadsInline: the read pools use readerDriver,
// which runs a bounded read's steps without the context's end (so mattn
// steps them on the caller's goroutine) and every other read with it.
func TestReadPoolsStepBoundedReadsInline(t *testing.T) {
	s := newSQLite(t)
	for name, pool := range map[string]any{"reads": s.r, "admin reads": s.ra} {
		db, err := s.r.DB()
		if pool == s.ra {
			db, err = s.ra.DB()
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := db.Driver().(*boundedReadDriver); !ok {
			t.Errorf("%s pool driver = %T, want *boundedReadDriver", name, db.Driver())
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if stepContext(ctx) != ctx {
		t.Error("an unmarked read lost its context's end")
	}
	if stepContext(bounded(ctx)).Done() != nil {
		t.Error("a bounded read kept its context's end: mattn would step each row on a goroutine of its own")
	}
	if got := stepContext(bounded(ctx)).Value(boundedKey{}); got == nil {
		t.Error("a bounded read lost its context's values")
	}
	cancel()
	if stepContext(bounded(ctx)).Err() == nil {
		t.Error("a bounded read of an ended context runs")
	}
}

// TestBoundedReadEndsWithItsContext: a bounded read whose context has
// ended does not run, and one whose context ends between two rows stops
// there (database/sql closes the rows).
func TestBoundedReadEndsWithItsContext(t *testing.T) {
	s := newSQLite(t)
	ctx := context.Background()
	for _, serial := range []string{"SN-B1", "SN-B2"} {
		if err := s.Enroll(ctx, enrollment(serial, nil)); err != nil {
			t.Fatal(err)
		}
	}
	ended, cancel := context.WithCancel(registry.WithAdminLane(ctx))
	cancel()
	if _, err := s.ListDevices(ended, registry.DeviceFilter{}); !errors.Is(err, context.Canceled) {
		t.Errorf("ListDevices on an ended context: %v, want context.Canceled", err)
	}
	if _, err := s.GetCertificate(ended, "00"); !errors.Is(err, context.Canceled) {
		t.Errorf("GetCertificate on an ended context: %v, want context.Canceled", err)
	}
	if devs, err := s.ListDevices(registry.WithAdminLane(ctx), registry.DeviceFilter{}); err != nil || len(devs) != 2 {
		t.Fatalf("ListDevices = %d devices, %v; want 2", len(devs), err)
	}

	db, err := s.r.DB()
	if err != nil {
		t.Fatal(err)
	}
	qctx, qcancel := context.WithCancel(ctx)
	defer qcancel()
	const total = 100000
	rows, err := db.QueryContext(bounded(qctx),
		"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 100000) SELECT x FROM c")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	if !rows.Next() {
		t.Fatalf("no first row: %v", rows.Err())
	}
	qcancel()
	time.Sleep(50 * time.Millisecond) // database/sql closes the rows on its own goroutine
	n := 1
	for rows.Next() {
		n++
	}
	if n == total || !errors.Is(rows.Err(), context.Canceled) {
		t.Errorf("after the context ended: %d of %d rows read, err %v; want fewer, context.Canceled", n, total, rows.Err())
	}
}
