//go:build !linux

package sqlstore

import "os"

func fadviseWillNeed(*os.File, int64, int64) error { return errNoFadvise }

// Resident is not available off Linux (prefetch_linux.go).
func Resident(string) (int64, int64, error) { return 0, 0, errNoFadvise }

// Evict is not available off Linux (prefetch_linux.go).
func Evict(string) error { return errNoFadvise }
