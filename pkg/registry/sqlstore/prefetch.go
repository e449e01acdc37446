package sqlstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// PrefetchReport is what Prefetch did.
type PrefetchReport struct {
	File      string        // the registry file
	Size      int64         // its size in bytes
	Available int64         // the memory available when it ran (MemAvailable), bytes; 0 unknown
	Advised   int64         // bytes the kernel was asked to read in (Size, or less when ctx ended first)
	Skipped   string        // why nothing was asked, "" when it was
	Took      time.Duration // how long asking took (the reads may finish a little later)
}

// PrefetchStep is how much of the file one posix_fadvise(WILLNEED) call
// names: Linux starts at most a few MiB of readahead per call, so one call
// for the whole file would read only its first pages.
const PrefetchStep = 8 << 20

// Prefetch asks the kernel to read the SQLite registry file into the page
// cache, as PostgreSQL's pg_prewarm does in its prefetch mode, when the file
// takes at most half of the memory available: it costs no process memory
// (the page cache is the kernel's, reclaimable), and the reads are
// asynchronous and sequential.
//
// Why: an enrollment or a renewal reads a leaf of each b-tree keyed at
// random (the certificate serial, the device serial and MACs). In a registry
// the page cache does not hold — at start after a reboot, or a restore —
// each of those reads waits for the disk. With 1,000,000 devices and the
// file cold, the server's CPU per enrollment grew by a tenth to a fifth,
// most of it in pread and in the Go runtime's monitor taking the P of a
// thread blocked in SQLite back (docs/BENCHMARKS.md, "Enrollment at a
// million: the page cache"). Cached, what remains is the deeper b-trees'
// own: 3% over an empty registry since migration 00013.
//
// It returns a report with Skipped set, and no error, on PostgreSQL (which
// caches in its own shared buffers: pg_prewarm), for an in-memory
// registry, where the kernel has no posix_fadvise, and when the file is too
// big for the memory available. It stops early when ctx ends.
func (s *Store) Prefetch(ctx context.Context) (PrefetchReport, error) {
	switch {
	case s.driver != DriverSQLite:
		return PrefetchReport{Skipped: "not SQLite: PostgreSQL keeps its own buffers (pg_prewarm)"}, nil
	case s.path == "":
		return PrefetchReport{Skipped: "in-memory registry"}, nil
	}
	return prefetchFile(ctx, s.path, memAvailable)
}

// errNoFadvise is a platform without posix_fadvise (prefetch_other.go).
var errNoFadvise = errors.New("posix_fadvise is not available on this platform")

// prefetchFile is Prefetch on the file at path, avail telling the memory
// available.
func prefetchFile(ctx context.Context, path string, avail func() (int64, error)) (PrefetchReport, error) {
	rep := PrefetchReport{File: path}
	f, err := os.Open(path)
	if err != nil {
		return rep, fmt.Errorf("sqlstore: prefetch: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return rep, fmt.Errorf("sqlstore: prefetch: %w", err)
	}
	rep.Size = st.Size()
	if rep.Available, err = avail(); err != nil {
		rep.Skipped = fmt.Sprintf("available memory unknown: %v", err)
		return rep, nil
	}
	if rep.Size > rep.Available/2 {
		rep.Skipped = fmt.Sprintf("the file (%d MiB) is more than half of the memory available (%d MiB)",
			rep.Size>>20, rep.Available>>20)
		return rep, nil
	}
	start := time.Now()
	for off := int64(0); off < rep.Size; off += PrefetchStep {
		if ctx.Err() != nil {
			break
		}
		n := min(PrefetchStep, rep.Size-off)
		if err := fadviseWillNeed(f, off, n); err != nil {
			if errors.Is(err, errNoFadvise) {
				rep.Skipped = err.Error()
				return rep, nil
			}
			return rep, fmt.Errorf("sqlstore: prefetch %s at %d: %w", path, off, err)
		}
		rep.Advised += n
	}
	rep.Took = time.Since(start)
	return rep, nil
}

// memAvailable is MemAvailable from /proc/meminfo: what the kernel
// estimates can be allocated without swapping, page cache it can reclaim
// included.
func memAvailable() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return parseMemAvailable(f)
}

func parseMemAvailable(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:")
		if !ok {
			continue
		}
		kb, unit, _ := strings.Cut(strings.TrimSpace(rest), " ")
		n, err := strconv.ParseInt(kb, 10, 64)
		if err != nil || unit != "kB" {
			return 0, fmt.Errorf("/proc/meminfo: MemAvailable %q", strings.TrimSpace(rest))
		}
		return n << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("/proc/meminfo has no MemAvailable")
}
