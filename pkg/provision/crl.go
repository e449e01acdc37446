package provision

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/registry"
)

// CRL is a signed CRL as served, with what HTTP caching needs.
type CRL struct {
	DER        []byte
	Number     int64
	ThisUpdate time.Time
	NextUpdate time.Time
	Entries    int
	// ETag is a strong HTTP entity tag (quoted) for DER.
	ETag string

	digest [sha256.Size]byte // of the entries it was built from
}

// CRL returns the current CRL, building one if there is none yet or the
// cached one has passed its nextUpdate.
func (r *Revocation) CRL(ctx context.Context) (*CRL, error) {
	if c := r.crl.Load(); c != nil && r.cfg.Now().Before(c.NextUpdate) {
		return c, nil
	}
	r.buildMu.Lock()
	defer r.buildMu.Unlock()
	// Another caller may have built it while this one waited.
	if c := r.crl.Load(); c != nil && r.cfg.Now().Before(c.NextUpdate) {
		return c, nil
	}
	start := r.revSeq.Load()
	c, err := r.buildLocked(ctx, nil)
	if err == nil {
		r.builtAt = max(r.builtAt, start)
	}
	return c, err
}

// MaxAge is how long an HTTP cache may keep an answer valid until next:
// never past it, and never longer than Refresh, so that caches revalidate
// soon after a revocation.
func (r *Revocation) MaxAge(next, now time.Time) time.Duration {
	return max(0, min(r.cfg.Refresh, next.Sub(now)))
}

// RebuildCRL builds, signs and caches a new CRL now, with a new number.
func (r *Revocation) RebuildCRL(ctx context.Context) (*CRL, error) {
	r.buildMu.Lock()
	defer r.buildMu.Unlock()
	return r.buildLocked(ctx, nil)
}

// Refresh rebuilds the CRL when the revoked certificates in the registry
// differ from those of the cached CRL (another replica revoked, or entries
// expired), when half of its validity has passed, or when there is none.
func (r *Revocation) Refresh(ctx context.Context) error {
	r.buildMu.Lock()
	defer r.buildMu.Unlock()
	seq := r.revSeq.Load()
	entries, err := r.cfg.Store.ListRevoked(ctx, r.cfg.Now())
	if err != nil {
		return fmt.Errorf("refresh CRL: %w", err)
	}
	entries = r.ownEntries(entries)
	cur := r.crl.Load()
	if cur != nil && cur.digest == digestEntries(entries) &&
		r.cfg.Now().Before(cur.ThisUpdate.Add(r.cfg.CRLValidity/2)) {
		r.builtAt = max(r.builtAt, seq)
		return nil
	}
	_, err = r.buildLocked(ctx, entries)
	if err == nil {
		r.builtAt = max(r.builtAt, seq)
	}
	return err
}

// rebuildSince rebuilds the CRL unless a build that began after revocation
// number seq committed has already succeeded: concurrent revocations share
// one build.
func (r *Revocation) rebuildSince(ctx context.Context, seq int64) (*CRL, error) {
	r.buildMu.Lock()
	defer r.buildMu.Unlock()
	if c := r.crl.Load(); c != nil && r.builtAt >= seq && seq > 0 && r.cfg.Now().Before(c.NextUpdate) {
		return c, nil
	}
	start := r.revSeq.Load()
	c, err := r.buildLocked(ctx, nil)
	if err == nil {
		r.builtAt = max(r.builtAt, start)
	}
	return c, err
}

// buildLocked builds a CRL from entries (read from the store when nil) and
// caches it. The caller holds buildMu.
func (r *Revocation) buildLocked(ctx context.Context, entries []registry.RevokedEntry) (*CRL, error) {
	start := time.Now()
	now := r.cfg.Now()
	if entries == nil {
		var err error
		if entries, err = r.cfg.Store.ListRevoked(ctx, now); err != nil {
			return nil, fmt.Errorf("build CRL: %w", err)
		}
		entries = r.ownEntries(entries)
	}
	revoked := make([]pki.RevokedCert, 0, len(entries))
	for _, e := range entries {
		sn, err := pki.ParseSerial(e.Serial)
		if err != nil {
			r.cfg.Log.Warn("CRL: skipping a registry serial that is not hex", "serial", e.Serial)
			continue
		}
		revoked = append(revoked, pki.RevokedCert{Serial: sn, RevokedAt: e.RevokedAt, Reason: e.Reason})
	}
	number, err := r.cfg.Store.NextCRLNumber(ctx)
	if err != nil {
		return nil, fmt.Errorf("build CRL: %w", err)
	}
	// thisUpdate is backdated a little for relying parties whose clocks lag.
	this := now.Add(-pki.DefaultBackdate).UTC().Truncate(time.Second)
	next := now.Add(r.cfg.CRLValidity).UTC().Truncate(time.Second)
	der, err := r.cfg.CRLSigner.SignCRL(ctx, &pki.CRLTemplate{Number: number, ThisUpdate: this, NextUpdate: next, Revoked: revoked})
	if err != nil {
		return nil, fmt.Errorf("build CRL %d: %w", number, err)
	}
	sum := sha256.Sum256(der)
	c := &CRL{
		DER: der, Number: number, ThisUpdate: this, NextUpdate: next, Entries: len(revoked),
		ETag:   `"` + strconv.FormatInt(number, 10) + "-" + hex.EncodeToString(sum[:8]) + `"`,
		digest: digestEntries(entries),
	}
	r.crl.Store(c)
	r.cfg.Metrics.CRLBuilt(number, time.Since(start))
	r.cfg.Log.Info("CRL rebuilt", "number", number, "entries", len(revoked), "bytes", len(der),
		"next_update", next.Format(time.RFC3339), "duration", time.Since(start).Round(time.Microsecond))
	return c, nil
}

// digestEntries fingerprints what a CRL lists.
func digestEntries(entries []registry.RevokedEntry) [sha256.Size]byte {
	h := sha256.New()
	var b [16]byte
	for _, e := range entries {
		h.Write([]byte(e.Serial))
		binary.BigEndian.PutUint64(b[:8], uint64(e.RevokedAt.UnixNano()))
		binary.BigEndian.PutUint64(b[8:], uint64(e.Reason))
		h.Write(b[:])
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}
