// Package swtpmconn is a client for swtpm's raw TCP server
// (--server type=tcp), shared by pkg/tpm and its test support
// (pkg/tpm/swtpmtest, which must not import pkg/tpm).
package swtpmconn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Conn is a connection to swtpm's raw TCP server: TPM commands and
// responses as they are, one command per connection, like its unixio
// server. Read returns the whole response even when TCP splits it, because
// go-tpm reads a response with a single Read. The zero value with Addr set
// is ready to use.
type Conn struct {
	Addr string // host:port

	conn net.Conn
	resp []byte
}

// Write sends one command on a new connection.
func (c *Conn) Write(p []byte) (int, error) {
	c.Close()
	conn, err := net.DialTimeout("tcp", c.Addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	c.conn = conn
	_ = conn.SetDeadline(time.Now().Add(2 * time.Minute)) // RSA keygen on a slow host
	return conn.Write(p)
}

// Read returns the response to the last command.
func (c *Conn) Read(p []byte) (int, error) {
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

// Close closes the current connection, if any.
func (c *Conn) Close() error {
	c.resp = nil
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}
