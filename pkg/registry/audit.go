package registry

import (
	"crypto/sha256"
	"encoding/binary"
	"io"
	"strconv"
	"time"
)

// AuditHash returns the chain hash of ev after the event whose hash is prev
// (for the first event, prev is sha256.Size zero bytes). Every backend
// computes the chain with it, so an export verifies whatever stored it.
//
// The canonical encoding is SHA-256 over prev, then each of these fields
// as an 8-byte big-endian byte length followed by its UTF-8 bytes, in this
// order:
//
//	Seq         decimal, no sign or padding ("42")
//	Time        UTC, RFC 3339 with nanoseconds, trailing zeros dropped (time.RFC3339Nano)
//	TenantID, Actor, Action, Target, Result, Detail, SourceAddr   as stored
//
// ev.PrevHash and ev.Hash are not hashed. A backend that stores Time at a
// coarser resolution must truncate it before hashing (the SQL store keeps
// microseconds), so that what is read back hashes to what was written.
func AuditHash(prev []byte, ev *AuditEvent) []byte {
	h := sha256.New()
	h.Write(prev)
	for _, f := range []string{
		strconv.FormatInt(ev.Seq, 10),
		ev.Time.UTC().Format(time.RFC3339Nano),
		ev.TenantID, ev.Actor, ev.Action, ev.Target, ev.Result, ev.Detail, ev.SourceAddr,
	} {
		writeField(h, f)
	}
	return h.Sum(nil)
}

func writeField(h io.Writer, f string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(f)))
	h.Write(n[:])
	h.Write([]byte(f))
}
