package main

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestGCPercentFor(t *testing.T) {
	const mb = 1 << 20
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, gcMaxPercent},
		{1, gcMaxPercent},         // would be millions: bounded
		{1 * mb, gcMaxPercent},    // 64× is 6300%: bounded
		{4 * mb, 1500},            // 4 MB × 16 = 64 MB
		{5 * mb, 1180},            // ceil(6400/5) − 100 = 1180: goal ≥ 64 MB
		{12 * mb, 434},            // ceil(6400/12) − 100
		{13 * mb, gcBasePercent},  // 13 × 5 = 65 ≥ 64: the base percent
		{200 * mb, gcBasePercent}, // a large live heap: GOGC=400 as before
	} {
		got := gcPercentFor(c.live, minHeapGoal, gcBasePercent)
		if got != c.want {
			t.Errorf("gcPercentFor(%d MB) = %d, want %d", c.live/mb, got, c.want)
		}
		if c.live > 0 && got < gcMaxPercent && c.live*uint64(100+got) < minHeapGoal*100 {
			t.Errorf("gcPercentFor(%d) = %d: goal %d below %d", c.live, got, c.live*uint64(100+got)/100, minHeapGoal)
		}
	}
}

// The tuner acts after real collections: this test process's live heap is a
// few MB, so the percent rises above the base until the goal is 64 MB.
func TestGCTunerRaisesPercentAfterGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	tuner := startGCTuner(minHeapGoal, gcBasePercent)
	t.Cleanup(func() { tuner.stopped.Store(true); debug.SetGCPercent(prev) })
	current := func() int { p := debug.SetGCPercent(-1); debug.SetGCPercent(p); return p }
	if got := current(); got != gcBasePercent {
		t.Fatalf("GC percent before any collection = %d, want %d", got, gcBasePercent)
	}
	deadline := time.Now().Add(10 * time.Second)
	for current() <= gcBasePercent {
		if time.Now().After(deadline) {
			t.Fatalf("GC percent still %d after collections: the tuner did not run", current())
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}
