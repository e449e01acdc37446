package provision

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/registry"
)

// ErrNoCRLPartition: the CRL partition asked for does not exist (not a
// number from 1 to pki.MaxCRLPartitions, or this CA publishes none).
var ErrNoCRLPartition = errors.New("no such CRL partition")

// CRL is a signed CRL as served, with what HTTP caching needs.
type CRL struct {
	DER        []byte
	Number     int64
	ThisUpdate time.Time
	NextUpdate time.Time
	Entries    int
	// ETag is a strong HTTP entity tag (quoted) for DER.
	ETag string
	// Partition is the partition this CRL covers (its issuing
	// distribution point), 0 for the full CRL.
	Partition int

	// revision is the registry's revocation revision (the partition's, or
	// the whole's for the full CRL) read before the entries were: the CRL
	// lists every revocation up to it.
	revision int64
}

// revSnapshot is the registry's revocation revisions as last read, and
// how many revoking writes this replica had made then (revSeq).
type revSnapshot struct {
	revs  *registry.CRLRevisions
	at    time.Time
	local int64
}

// revisions returns the registry's revocation revisions: as last read
// when that was less than Refresh/2 ago and fresh is false, else read now
// (one query). Revocations another replica made since the last read drop
// the cached OCSP answers (this replica's own drop only their serials'):
// sooner than their reuse bound, Refresh, would.
func (r *Revocation) revisions(ctx context.Context, fresh bool) (*registry.CRLRevisions, error) {
	now := r.cfg.Now()
	old := r.revs.Load()
	if !fresh && old != nil && now.Sub(old.at) < r.cfg.Refresh/2 && !now.Before(old.at) {
		return old.revs, nil
	}
	local := r.revSeq.Load() // before the read: every write it counts is in revs
	revs, err := r.cfg.Store.CRLRevisions(ctx)
	if err != nil {
		return nil, fmt.Errorf("read CRL revisions: %w", err)
	}
	if old != nil && revs.All-old.revs.All > local-old.local {
		r.clearOCSP()
	}
	// Keep the newest: a slow reader must not put an older one back.
	for old == nil || revs.All >= old.revs.All {
		if r.revs.CompareAndSwap(old, &revSnapshot{revs: revs, at: now, local: local}) {
			break
		}
		old = r.revs.Load()
	}
	return revs, nil
}

// current reports whether c may still be served for a registry at
// revision rev: it lists everything up to rev, and less than half of its
// validity has passed (so relying parties always hold one well before its
// nextUpdate).
func (r *Revocation) current(c *CRL, rev int64) bool {
	return c != nil && c.revision >= rev && r.cfg.Now().Before(c.ThisUpdate.Add(r.cfg.CRLValidity/2))
}

// CRL returns the full CRL, rebuilt first when the registry's revocation
// revision (read at most every Refresh/2) is past the one it was built at,
// when half of its validity has passed, or when there is none. While the
// registry cannot be read, the CRL held is served until its nextUpdate.
func (r *Revocation) CRL(ctx context.Context) (*CRL, error) {
	revs, err := r.revisions(ctx, false)
	if err != nil {
		if c := r.crl.Load(); c != nil && r.cfg.Now().Before(c.NextUpdate) {
			return c, nil
		}
		return nil, fmt.Errorf("CRL: %w", err)
	}
	if c := r.crl.Load(); r.current(c, revs.All) {
		return c, nil
	}
	return r.buildFull(ctx, revs.All, false)
}

// PartitionCRL returns partition n's CRL (RFC 5280 §5.2.5: its issuing
// distribution point is the URL certificates of the partition name), rebuilt
// first on the same terms as CRL. It is small: one partition's revoked
// certificates.
func (r *Revocation) PartitionCRL(ctx context.Context, n int) (*CRL, error) {
	if r.cfg.CRLURL == "" {
		return nil, fmt.Errorf("%w: this CA publishes no partition CRLs (no CRL URL)", ErrNoCRLPartition)
	}
	if n < 1 || n > pki.MaxCRLPartitions {
		return nil, fmt.Errorf("%w: %d is not from 1 to %d", ErrNoCRLPartition, n, pki.MaxCRLPartitions)
	}
	revs, err := r.revisions(ctx, false)
	if err != nil {
		if c := r.heldPartition(n); c != nil && r.cfg.Now().Before(c.NextUpdate) {
			return c, nil
		}
		return nil, fmt.Errorf("CRL partition %d: %w", n, err)
	}
	return r.buildPartition(ctx, n, revs.Partitions[n])
}

// MaxAge is how long an HTTP cache may keep an answer valid until next:
// never past it, and never longer than Refresh, so that caches revalidate
// soon after a revocation.
func (r *Revocation) MaxAge(next, now time.Time) time.Duration {
	return max(0, min(r.cfg.Refresh, next.Sub(now)))
}

// RebuildCRL builds, signs and caches a new full CRL now, with a new
// number.
func (r *Revocation) RebuildCRL(ctx context.Context) (*CRL, error) {
	return r.buildFull(ctx, 0, true)
}

// Refresh brings what this replica serves up to the registry: it reads the
// revocation revisions, and rebuilds the full CRL and every partition CRL
// held whose revision is behind (another replica revoked) or half of whose
// validity has passed; it builds the full CRL when there is none.
func (r *Revocation) Refresh(ctx context.Context) error {
	revs, err := r.revisions(ctx, true)
	if err != nil {
		return fmt.Errorf("refresh CRL: %w", err)
	}
	var errs []error
	if c := r.crl.Load(); !r.current(c, revs.All) {
		if _, err := r.buildFull(ctx, revs.All, false); err != nil {
			errs = append(errs, err)
		}
	}
	r.partsMu.Lock()
	held := make([]int, 0, len(r.parts))
	for n := range r.parts {
		held = append(held, n)
	}
	r.partsMu.Unlock()
	for _, n := range held {
		if _, err := r.buildPartition(ctx, n, revs.Partitions[n]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// buildFull builds the full CRL unless (force false) the one held is
// current for revision rev: concurrent callers share one build.
func (r *Revocation) buildFull(ctx context.Context, rev int64, force bool) (*CRL, error) {
	r.buildMu.Lock()
	defer r.buildMu.Unlock()
	if c := r.crl.Load(); !force && r.current(c, rev) {
		return c, nil
	}
	c, err := r.build(ctx, 0)
	if err != nil {
		return nil, err
	}
	r.crl.Store(c)
	return c, nil
}

// buildPartition returns partition n's CRL, built now unless the one held
// is current for revision rev; builds of one partition are serialised and
// shared.
func (r *Revocation) buildPartition(ctx context.Context, n int, rev int64) (*CRL, error) {
	mu := &r.partLocks[n]
	if c := r.heldPartition(n); r.current(c, rev) {
		return c, nil
	}
	mu.Lock()
	defer mu.Unlock()
	if c := r.heldPartition(n); r.current(c, rev) {
		return c, nil
	}
	c, err := r.build(ctx, n)
	if err != nil {
		return nil, err
	}
	r.partsMu.Lock()
	r.parts[n] = c
	r.partsMu.Unlock()
	return c, nil
}

// held is the CRL held for partition n (0: the full CRL), or nil.
func (r *Revocation) held(n int) *CRL {
	if n == 0 {
		return r.crl.Load()
	}
	return r.heldPartition(n)
}

func (r *Revocation) heldPartition(n int) *CRL {
	r.partsMu.Lock()
	defer r.partsMu.Unlock()
	return r.parts[n]
}

// build reads the revocation revision, then the entries (all, or partition
// n's), takes a CRL number (the full CRL's counter, or the partition's),
// and signs. The revision is read first: the entries read after it hold
// every revocation it counts.
func (r *Revocation) build(ctx context.Context, n int) (*CRL, error) {
	what := "CRL"
	if n > 0 {
		what = "CRL partition " + strconv.Itoa(n)
	}
	start := time.Now()
	now := r.cfg.Now()
	revs, err := r.revisions(ctx, true)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", what, err)
	}
	// The entries are encoded as they are read (nothing per row is kept
	// but its ~55 DER bytes): a full CRL of 100,000 entries built at
	// startup must not grow the heap by a slice of structs, big.Ints and
	// encoder trees (see pki.CRLEntries).
	hint := 0
	if old := r.held(n); old != nil {
		hint = old.Entries + old.Entries/16
	}
	entries := pki.NewCRLEntries(hint)
	err = r.cfg.Store.EachRevoked(ctx, n, now, func(row *registry.RevokedRow) error {
		if !r.ownRow(row.IssuerKeyID) {
			return nil
		}
		err := entries.AddHex(row.Serial, row.RevokedAt, row.Reason)
		if errors.Is(err, pki.ErrBadCertSerial) {
			r.cfg.Log.Warn("CRL: skipping a registry serial that is not hex", "serial", string(row.Serial))
			return nil
		}
		return err
	})
	var number int64
	var idp *pki.IDP
	if err == nil && n == 0 {
		number, err = r.cfg.Store.NextCRLNumber(ctx)
	} else if err == nil {
		number, err = r.cfg.Store.NextPartitionCRLNumber(ctx, n)
		// Every certificate that names a partition is a leaf.
		idp = &pki.IDP{URI: pki.CRLPartitionURL(r.cfg.CRLURL, n), OnlyContainsUserCerts: true}
	}
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", what, err)
	}
	listed := time.Since(start)
	count := entries.Len()
	// thisUpdate is backdated a little for relying parties whose clocks lag.
	this := now.Add(-pki.DefaultBackdate).UTC().Truncate(time.Second)
	next := now.Add(r.cfg.CRLValidity).UTC().Truncate(time.Second)
	der, err := r.cfg.CRLSigner.SignCRL(ctx, &pki.CRLTemplate{Number: number, ThisUpdate: this, NextUpdate: next, Entries: entries, IDP: idp})
	if err != nil {
		return nil, fmt.Errorf("build %s number %d: %w", what, number, err)
	}
	sum := sha256.Sum256(der)
	c := &CRL{
		DER: der, Number: number, ThisUpdate: this, NextUpdate: next, Entries: count, Partition: n,
		ETag:     `"` + strconv.Itoa(n) + "-" + strconv.FormatInt(number, 10) + "-" + hex.EncodeToString(sum[:8]) + `"`,
		revision: revs.All,
	}
	if n > 0 {
		c.revision = revs.Partitions[n]
	}
	if n == 0 {
		r.cfg.Metrics.CRLBuilt(number, time.Since(start))
	}
	level := r.cfg.Log.Info
	if n > 0 {
		level = r.cfg.Log.Debug // one per revocation: small and frequent
	}
	level("CRL rebuilt", "partition", n, "number", number, "entries", count, "bytes", len(der),
		"next_update", next.Format(time.RFC3339), "read", listed.Round(time.Microsecond),
		"duration", time.Since(start).Round(time.Microsecond))
	return c, nil
}
