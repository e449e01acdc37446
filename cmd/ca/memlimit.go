package main

import (
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"strings"

	"github.com/dustin/go-humanize"
)

// 'ca serve' runs with GOGC=400: a heap of tens of MB that is mostly
// short-lived garbage costs little GC CPU that way. But the heap may then
// grow to five times what is live, and what is live has peaks — a full CRL
// built at startup — so RSS reached 200–460 MB on a registry of a million
// devices. A soft memory limit (the Go runtime's, GOMEMLIMIT) bounds that:
// under it GOGC=400 rules; near it the GC runs sooner.

const (
	// defaultMemoryLimit is memory_limit when the config has none.
	defaultMemoryLimit = 128 << 20
	// minMemoryLimit is the least memory_limit accepted: below it the
	// runtime would collect continuously for an ordinary CA's live heap.
	minMemoryLimit = 32 << 20
	// memoryLimitOff turns the limit off.
	memoryLimitOff = "off"
)

// memoryLimit is memory_limit in bytes: the default when unset,
// math.MaxInt64 (no limit) for "off".
func (c *Config) memoryLimit() (int64, error) {
	v := strings.TrimSpace(c.MemoryLimit)
	switch {
	case v == "":
		return defaultMemoryLimit, nil
	case strings.EqualFold(v, memoryLimitOff):
		return math.MaxInt64, nil
	}
	n, err := humanize.ParseBytes(v)
	if err != nil || strings.HasPrefix(v, "-") {
		return 0, fmt.Errorf("memory_limit: %q is not a size such as 128MiB or 1GiB (or %q)", c.MemoryLimit, memoryLimitOff)
	}
	if n < minMemoryLimit || n > math.MaxInt64 {
		return 0, fmt.Errorf("memory_limit: %s is below the minimum of %s (or %q for no limit)",
			humanize.IBytes(n), humanize.IBytes(minMemoryLimit), memoryLimitOff)
	}
	return int64(n), nil
}

// validateMemoryLimit returns the problems of memory_limit.
func (c *Config) validateMemoryLimit() []error {
	if _, err := c.memoryLimit(); err != nil {
		return []error{err}
	}
	return nil
}

// applyMemoryLimit sets the Go runtime's soft memory limit from the
// config, unless GOMEMLIMIT is set (the runtime has read it: the operator's
// word wins, as for GOGC).
func applyMemoryLimit(c *Config, getenv func(string) string, log *slog.Logger) {
	if v := getenv("GOMEMLIMIT"); v != "" {
		log.Info("memory limit from GOMEMLIMIT", "memory_limit", v)
		return
	}
	n, err := c.memoryLimit()
	if err != nil { // Validate refused it already
		log.Warn("memory limit not set", "err", err)
		return
	}
	debug.SetMemoryLimit(n)
	if n == math.MaxInt64 {
		log.Info("memory limit off")
		return
	}
	log.Info("memory limit", "memory_limit", humanize.IBytes(uint64(n)))
}
