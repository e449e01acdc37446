package sqlstore

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

func fadviseWillNeed(f *os.File, off, n int64) error {
	return unix.Fadvise(int(f.Fd()), off, n, unix.FADV_WILLNEED)
}

// Resident tells how many bytes of the file at path are in the page cache
// (mincore over a read-only mapping), and its size: what a measurement at
// scale records about the registry it ran on (test/load).
func Resident(path string) (resident, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return 0, 0, err
	}
	size = st.Size()
	m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, size, fmt.Errorf("mmap %s: %w", path, err)
	}
	defer unix.Munmap(m)
	page := int64(os.Getpagesize())
	vec := make([]byte, (size+page-1)/page)
	// x/sys/unix has no Mincore for Linux.
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		return 0, size, fmt.Errorf("mincore %s: %w", path, errno)
	}
	for _, v := range vec {
		if v&1 != 0 {
			resident += page
		}
	}
	return min(resident, size), size, nil
}

// Evict drops the file's pages from the page cache after writing back any
// dirty ones (posix_fadvise DONTNEED), so that a measurement can start
// from a cold registry as after a reboot (test/load -cold).
func Evict(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}
