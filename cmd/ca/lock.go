package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// A SQLite registry has a lock file beside it, "<registry>.lock": every
// 'ca serve' holds a shared flock on it for as long as it runs, and
// 'ca restore' takes it exclusively. So a restore refuses a registry a
// running CA has open, and a CA refuses to start in the middle of a
// restore. The kernel drops the lock when the process dies, however it
// dies: a stale lock file is harmless.

// errRegistryBusy is the lock held by another process.
var errRegistryBusy = errors.New("registry in use")

// registryLockPath is the lock file of a SQLite registry DSN.
func registryLockPath(dsn string) string {
	path, _, _ := strings.Cut(dsn, "?")
	return strings.TrimPrefix(path, "file:") + ".lock"
}

// lockRegistry takes the registry's lock without waiting: shared for
// 'ca serve', exclusive for 'ca restore'. The returned function releases it.
func lockRegistry(dsn string, exclusive bool) (func(), error) {
	path := registryLockPath(dsn)
	// Read-only and world-readable: whoever runs 'ca restore' (root) or
	// 'ca serve' (the service user) can lock it; it holds nothing.
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open registry lock %s: %w", path, err)
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	if err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is locked by another process", errRegistryBusy, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
