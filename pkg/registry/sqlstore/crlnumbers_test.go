package sqlstore

import (
	"context"
	"testing"
)

// TestRaiseCRLNumbers: counters below the floor move up to it, a counter
// already past it stays, the next numbers handed out are above the floor,
// and a negative floor is refused with nothing changed.
func testRaiseCRLNumbers(t *testing.T, s *Store) {
	ctx := context.Background()
	mustNext := func(part int) int64 {
		t.Helper()
		var n int64
		var err error
		if part == 0 {
			n, err = s.NextCRLNumber(ctx)
		} else {
			n, err = s.NextPartitionCRLNumber(ctx, part)
		}
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	mustNext(0)
	mustNext(3)
	for range 5 {
		mustNext(7)
	}
	// Partition 7 is at 6 now: its first number follows the full CRL's 1, then four more.
	if err := s.RaiseCRLNumbers(ctx, -1); err == nil {
		t.Fatal("negative floor accepted")
	}
	if n := mustNext(0); n != 2 {
		t.Fatalf("after a refused raise the full CRL number is %d, want 2", n)
	}
	if err := s.RaiseCRLNumbers(ctx, 5); err != nil {
		t.Fatal(err)
	}
	if n := mustNext(0); n != 6 {
		t.Errorf("full CRL after raise to 5: %d, want 6", n)
	}
	if n := mustNext(3); n != 6 {
		t.Errorf("partition 3 after raise to 5: %d, want 6", n)
	}
	if n := mustNext(7); n != 7 {
		t.Errorf("partition 7 (already past 5) after the raise: %d, want 7", n)
	}
	if n := mustNext(9); n != 7 {
		t.Errorf("partition 9, first published after the raise: %d, want 7 (above the full CRL's 6)", n)
	}
}

func TestRaiseCRLNumbersSQLite(t *testing.T) { testRaiseCRLNumbers(t, newSQLite(t)) }

func TestRaiseCRLNumbersPostgres(t *testing.T) { testRaiseCRLNumbers(t, newPostgres(t)) }
