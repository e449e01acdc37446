package main

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// The CA's live heap is small — 3–4 MB serving renewals on a registry of
// thousands of devices — and what it allocates per request (a TLS handshake,
// a certificate, a JSON answer: ~60 KB) is garbage by the answer. With GOGC
// alone the heap goal is five times the live heap, ~20 MB, and the GC ran
// seven times a second under renewal load, ~2–4% of the server's CPU in
// marking, sweeping and write barriers. gcTuner keeps the goal at least
// minHeapGoal: after each collection it raises the GC percent so that
// live × (1 + percent/100) ≥ minHeapGoal, never below basePercent. A large
// live heap (a full CRL of a million entries) gets basePercent as before,
// and the memory limit (memory_limit, GOMEMLIMIT) still bounds it all.

const (
	// gcBasePercent is the GC percent of 'ca serve' (GOGC=400).
	gcBasePercent = 400
	// minHeapGoal is the least heap goal gcTuner keeps.
	minHeapGoal = 64 << 20
	// gcMaxPercent bounds the tuner for an almost empty heap.
	gcMaxPercent = 5000
)

// gcPercentFor is the GC percent that puts the heap goal of a live heap of
// live bytes at minGoal or above: base when base does, at most gcMaxPercent.
func gcPercentFor(live, minGoal uint64, base int) int {
	if live == 0 {
		return gcMaxPercent
	}
	if live*uint64(100+base) >= minGoal*100 {
		return base
	}
	p := (minGoal*100+live-1)/live - 100 // ceil(minGoal/live)·100 − 100
	if p > gcMaxPercent {
		return gcMaxPercent
	}
	return int(p)
}

// gcTuner re-sets the GC percent after every collection (gcSentinel's
// finalizer runs once per GC cycle and re-arms itself).
type gcTuner struct {
	minGoal uint64
	base    int
	sample  []metrics.Sample
	percent int
	stopped atomic.Bool
}

type gcSentinel struct{ t *gcTuner }

// startGCTuner starts tuning; the GC percent is base until the first
// collection. It runs for the life of the process ('ca serve'); tests stop
// it.
func startGCTuner(minGoal uint64, base int) *gcTuner {
	t := &gcTuner{minGoal: minGoal, base: base, percent: base,
		sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	debug.SetGCPercent(base)
	runtime.SetFinalizer(&gcSentinel{t: t}, (*gcSentinel).collected)
	return t
}

func (s *gcSentinel) collected() {
	if s.t.stopped.Load() {
		return
	}
	s.t.tune()
	runtime.SetFinalizer(s, (*gcSentinel).collected)
}

func (t *gcTuner) tune() {
	metrics.Read(t.sample)
	if t.sample[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	if p := gcPercentFor(t.sample[0].Value.Uint64(), t.minGoal, t.base); p != t.percent {
		t.percent = p
		debug.SetGCPercent(p)
	}
}
