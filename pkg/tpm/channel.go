package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

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

// tcpConn is a connection to swtpm's raw TCP server (--server type=tcp):
// TPM commands and responses as they are, one command per connection, like
// its unixio server. Read returns the whole response even when TCP splits
// it, because go-tpm reads a response with a single Read.
type tcpConn struct {
	addr string
	conn net.Conn
	resp []byte
}

func (c *tcpConn) Write(p []byte) (int, error) {
	c.Close()
	conn, err := net.DialTimeout("tcp", c.addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	c.conn = conn
	_ = conn.SetDeadline(time.Now().Add(2 * time.Minute)) // RSA keygen on a slow host
	return conn.Write(p)
}

func (c *tcpConn) Read(p []byte) (int, error) {
	if c.resp == nil {
		if c.conn == nil {
			return 0, errors.New("read before write")
		}
		hdr := make([]byte, 6) // tag, size
		if _, err := io.ReadFull(c.conn, hdr); err != nil {
			return 0, err
		}
		size := binary.BigEndian.Uint32(hdr[2:])
		if size < 10 || size > 1<<16 {
			return 0, fmt.Errorf("TPM response size %d", size)
		}
		c.resp = make([]byte, size)
		copy(c.resp, hdr)
		if _, err := io.ReadFull(c.conn, c.resp[6:]); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.resp)
	c.resp = c.resp[n:]
	if len(c.resp) == 0 {
		c.resp = nil
	}
	return n, nil
}

func (c *tcpConn) Close() error {
	c.resp = nil
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}

// openUnix opens swtpm's unixio server socket for raw commands (one
// connection per command, as step's library does).
func openUnix(path string) (io.ReadWriteCloser, error) {
	return tpmutil.NewEmulatorReadWriteCloser(path), nil
}
