package tpm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/google/go-tpm/tpmutil"
)

// channel is go-attestation's command channel on a TPM character device or
// a TCP socket. step's library calls Close after every operation and reuses
// the value, so the connection is reopened on the next command.
type channel struct {
	open func() (io.ReadWriteCloser, error)
	mu   sync.Mutex
	f    io.ReadWriteCloser
}

func (c *channel) get() (io.ReadWriteCloser, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		f, err := c.open()
		if err != nil {
			return nil, err
		}
		c.f = f
	}
	return c.f, nil
}

func (c *channel) Read(p []byte) (int, error) {
	f, err := c.get()
	if err != nil {
		return 0, err
	}
	return f.Read(p)
}

func (c *channel) Write(p []byte) (int, error) {
	f, err := c.get()
	if err != nil {
		return 0, err
	}
	return f.Write(p)
}

// Close closes the device until the next command.
func (c *channel) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return nil
	}
	err := c.f.Close()
	c.f = nil
	return err
}

// MeasurementLog is not used by this package.
func (c *channel) MeasurementLog() ([]byte, error) { return nil, nil }

// openDevice opens a TPM character device for raw commands.
func openDevice(path string) (io.ReadWriteCloser, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode()&os.ModeCharDevice == 0 {
		return nil, fmt.Errorf("%s is not a character device", path)
	}
	rwc, err := tpmutil.OpenTPM(path)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("%w (the agent needs group tss or root)", err)
		}
		return nil, err
	}
	return rwc, nil
}

// openUnix opens swtpm's unixio server socket for raw commands (one
// connection per command, as step's library does).
func openUnix(path string) (io.ReadWriteCloser, error) {
	return tpmutil.NewEmulatorReadWriteCloser(path), nil
}
