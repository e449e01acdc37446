package provision

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ocsp"

	"devpki/pkg/pki"
	"devpki/pkg/registry"
)

// Revocation defaults.
const (
	DefaultCRLValidity  = 24 * time.Hour
	DefaultRefresh      = time.Minute
	DefaultOCSPValidity = time.Hour
	DefaultOCSPCacheMax = 100_000
)

// RevocationStore is what Revocation reads and writes: revocations, the
// CRL's entries and number, quarantine releases and refusals.
// *sqlstore.Store implements it.
type RevocationStore interface {
	GetCertificate(ctx context.Context, serial string) (*registry.Certificate, error)
	GetDevice(ctx context.Context, id string) (*registry.Device, error)
	RevokeCertificate(ctx context.Context, serial string, reason int, at time.Time, audit *registry.AuditEvent) (*registry.Certificate, error)
	RevokeDevice(ctx context.Context, deviceID string, reason int, audit *registry.AuditEvent) ([]*registry.Certificate, error)
	NextCRLNumber(ctx context.Context) (int64, error)
	NextPartitionCRLNumber(ctx context.Context, partition int) (int64, error)
	CRLRevisions(ctx context.Context) (*registry.CRLRevisions, error)
	EachRevoked(ctx context.Context, partition int, now time.Time, fn func(*registry.RevokedRow) error) error
	GetQuarantine(ctx context.Context, id string) (*registry.Quarantine, error)
	ListDevices(ctx context.Context, f registry.DeviceFilter) ([]*registry.Device, error)
	ApplyRelease(ctx context.Context, w *registry.ReleaseWrite) error
	AppendAudit(ctx context.Context, ev *registry.AuditEvent) error
	// RecordRefusal counts an anonymous refusal (appendRefusal).
	RecordRefusal(ctx context.Context, r *registry.Refusal) error
}

// CRLSigner signs CRLs. *pki.CA implements it.
type CRLSigner interface {
	SignCRL(ctx context.Context, t *pki.CRLTemplate) ([]byte, error)
}

// OCSPSigner signs OCSP responses for one issuer. *pki.OCSPResponder
// implements it.
type OCSPSigner interface {
	Sign(ctx context.Context, st *pki.OCSPStatus) ([]byte, error)
	MatchesIssuer(req *ocsp.Request) bool
}

// RevocationConfig configures NewRevocation. Store and CRLSigner are
// required; OCSP may be nil (then OCSP answers unauthorized).
type RevocationConfig struct {
	Store     RevocationStore
	CRLSigner CRLSigner
	OCSP      OCSPSigner
	// CRLURL is the URL certificates name for the full CRL; partition n's
	// CRL is CRLURL/p/n (pki.CRLPartitionURL) and names that URL as its
	// issuing distribution point. Empty: no partition CRLs are served.
	CRLURL string
	// CRLValidity is nextUpdate - thisUpdate of each CRL; 0 means 24h. A
	// CRL is rebuilt when it misses a revocation and, at the latest, when
	// half of it has passed.
	CRLValidity time.Duration
	// Refresh bounds how late this replica shows a revocation made by
	// another: the registry's revocation revisions (one cheap query) are
	// re-read when older than Refresh/2, and Run rebuilds what they show
	// behind every Refresh; it is also the longest an OCSP response is
	// reused from memory. 0 means 1m.
	Refresh time.Duration
	// OCSPValidity is nextUpdate - thisUpdate of OCSP responses; 0 means 1h.
	OCSPValidity time.Duration
	// OCSPCacheMax caps the cached OCSP responses; 0 means 100,000.
	OCSPCacheMax int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Log receives CRL rebuild progress; nil means slog.Default().
	Log *slog.Logger
	// IssuerKeyID, when set, is the CA issuer (pki.KeyID) whose
	// certificates this Revocation's CRL lists (others are another
	// issuer's, see SetIssuers); certificates recorded with no issuer count
	// as its own. Empty lists every revoked certificate.
	IssuerKeyID string
	// Metrics counts revocations, CRL builds and OCSP answers; nil counts
	// nothing.
	Metrics Metrics
}

// Revocation revokes certificates and devices and serves what relying
// parties check: the full CRL, the partition CRLs and OCSP responses, from
// memory, each brought up to the registry's revocation revisions. Before a
// revocation is acknowledged, the CRL that covers each certificate it
// revoked — its partition's, or the full CRL for a certificate that names
// no partition — lists it, and this replica's OCSP answers say so. It is
// safe for concurrent use.
type Revocation struct {
	cfg RevocationConfig

	crl     atomic.Pointer[CRL]
	buildMu sync.Mutex   // one full CRL build at a time
	revSeq  atomic.Int64 // bumped after every committed revocation
	revs    atomic.Pointer[revSnapshot]

	partsMu   sync.Mutex
	parts     map[int]*CRL                         // partition CRLs built so far
	partLocks [pki.MaxCRLPartitions + 1]sync.Mutex // one build per partition at a time

	ocspMu    sync.Mutex
	ocspCache map[ocspKey]*ocspEntry

	// issuers are the other CA issuers' Revocations during a rollover
	// (SetIssuers), by KeyID.
	issuers   atomic.Pointer[map[string]*Revocation]
	secondary bool // NewIssuerRevocation
}

// NewRevocation checks cfg and applies its defaults. It builds no CRL: the
// first CRL is built by Run, or on first use.
func NewRevocation(cfg RevocationConfig) (*Revocation, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("provision: revocation: Store is required"))
	}
	if cfg.CRLSigner == nil {
		errs = append(errs, errors.New("provision: revocation: CRLSigner is required"))
	}
	if cfg.CRLValidity < 0 || cfg.Refresh < 0 || cfg.OCSPValidity < 0 || cfg.OCSPCacheMax < 0 {
		errs = append(errs, errors.New("provision: revocation: durations and sizes must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.CRLValidity == 0 {
		cfg.CRLValidity = DefaultCRLValidity
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = DefaultRefresh
	}
	if cfg.OCSPValidity == 0 {
		cfg.OCSPValidity = DefaultOCSPValidity
	}
	if cfg.OCSPCacheMax == 0 {
		cfg.OCSPCacheMax = DefaultOCSPCacheMax
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	if cfg.CRLURL != "" && !strings.HasPrefix(cfg.CRLURL, "http://") && !strings.HasPrefix(cfg.CRLURL, "https://") {
		return nil, fmt.Errorf("provision: revocation: CRLURL %q is not an http(s) URL", cfg.CRLURL)
	}
	return &Revocation{cfg: cfg, ocspCache: make(map[ocspKey]*ocspEntry), parts: make(map[int]*CRL)}, nil
}

// RevokeResult is what a revocation did.
type RevokeResult struct {
	// Certificates revoked by this call, or — when AlreadyRevoked — the
	// certificate as it already was (RevokeCertificate only).
	Certificates []*registry.Certificate
	// AlreadyRevoked: there was nothing left to revoke; nothing was
	// written, not even an audit event.
	AlreadyRevoked bool
	// CRLNumber is the number of a CRL, built after the revocation
	// committed, that lists it (the partition CRL of the first certificate
	// revoked, or the full CRL); 0 if that build failed (Run retries).
	CRLNumber int64
}

// RevokeCertificate revokes one certificate with an RFC 5280 reason. The
// revocation is committed with its audit event, then the OCSP cache entry
// is dropped and the CRL rebuilt, all before it returns. Refusals (bad
// reason, unknown serial, another tenant's certificate) are audited.
func (r *Revocation) RevokeCertificate(ctx context.Context, who Actor, serial string, reason int) (*RevokeResult, error) {
	const action = ActionCertRevoke
	if err := registry.ValidReason(reason); err != nil {
		r.refuse(ctx, who, action, serial, err)
		return nil, err
	}
	c, err := r.cfg.Store.GetCertificate(ctx, serial)
	if err != nil {
		r.refuse(ctx, who, action, serial, err)
		return nil, fmt.Errorf("revoke certificate %s: %w", serial, err)
	}
	if !InScope(who, c.TenantID) {
		err := fmt.Errorf("no certificate %s in your tenant: %w", serial, registry.ErrNotFound)
		r.refuse(ctx, who, action, serial, err)
		return nil, err
	}
	ev := event(who, c.TenantID, action, serial, registry.ResultOK, "reason="+registry.ReasonName(reason))
	if c.DeviceID != "" {
		ev.Detail += " device=" + c.DeviceID
	}
	c, err = r.cfg.Store.RevokeCertificate(ctx, serial, reason, r.cfg.Now(), ev)
	switch {
	case errors.Is(err, registry.ErrAlreadyRevoked):
		return &RevokeResult{Certificates: []*registry.Certificate{c}, AlreadyRevoked: true, CRLNumber: r.crlNumber()}, nil
	case err != nil:
		r.refuse(ctx, who, action, serial, err)
		return nil, fmt.Errorf("revoke certificate %s: %w", serial, err)
	}
	return r.revoked(ctx, []*registry.Certificate{c}), nil
}

// RevokeDevice revokes a device — its status and every unexpired
// certificate — in one transaction, then updates OCSP and the CRL as
// RevokeCertificate does.
func (r *Revocation) RevokeDevice(ctx context.Context, who Actor, deviceID string, reason int) (*RevokeResult, error) {
	const action = ActionDeviceRevoke
	if err := registry.ValidReason(reason); err != nil {
		r.refuse(ctx, who, action, deviceID, err)
		return nil, err
	}
	d, err := r.cfg.Store.GetDevice(ctx, deviceID)
	if err != nil {
		r.refuse(ctx, who, action, deviceID, err)
		return nil, fmt.Errorf("revoke device %s: %w", deviceID, err)
	}
	if !InScope(who, d.TenantID) {
		err := fmt.Errorf("no device %s in your tenant: %w", deviceID, registry.ErrNotFound)
		r.refuse(ctx, who, action, deviceID, err)
		return nil, err
	}
	ev := event(who, d.TenantID, action, deviceID, registry.ResultOK, "reason="+registry.ReasonName(reason)+" serial="+d.Serial)
	certs, err := r.cfg.Store.RevokeDevice(ctx, deviceID, reason, ev)
	switch {
	case errors.Is(err, registry.ErrAlreadyRevoked):
		return &RevokeResult{AlreadyRevoked: true, CRLNumber: r.crlNumber()}, nil
	case err != nil:
		r.refuse(ctx, who, action, deviceID, err)
		return nil, fmt.Errorf("revoke device %s: %w", deviceID, err)
	}
	return r.revoked(ctx, certs), nil
}

// revoked runs after a revocation committed: drop the OCSP answers, then
// bring the CRL covering each certificate up to the registry's revision
// read now, after the commit — its partition CRL (small), or the full CRL
// for a certificate that names no partition. A certificate's partition
// revoked on this replica leaves the full CRL to the next request or
// Refresh (the full CRL is big; it shows the revocation within Refresh).
// Builds that already include the revocation are not repeated.
func (r *Revocation) revoked(ctx context.Context, certs []*registry.Certificate) *RevokeResult {
	r.revSeq.Add(1)
	for _, c := range certs {
		r.invalidateOCSP(c.Serial)
		r.cfg.Metrics.Revocation(registry.ReasonName(c.RevocationReason))
	}
	res := &RevokeResult{Certificates: certs}
	r.revokedElsewhere(ctx, certs)
	ctx = context.WithoutCancel(ctx)
	revs, err := r.revisions(ctx, true)
	if err != nil {
		r.cfg.Log.Error("CRL rebuild after revocation failed; the next refresh retries", "err", err)
		return res
	}
	done := map[int]bool{}
	for _, c := range certs {
		p := c.CRLPartition
		if done[p] {
			continue
		}
		done[p] = true
		var crl *CRL
		if p == 0 || r.cfg.CRLURL == "" || p > pki.MaxCRLPartitions {
			crl, err = r.buildFull(ctx, revs.All, false)
		} else {
			crl, err = r.buildPartition(ctx, p, revs.Partitions[p])
		}
		if err != nil {
			r.cfg.Log.Error("CRL rebuild after revocation failed; the next refresh retries", "partition", p, "err", err)
			continue
		}
		if res.CRLNumber == 0 {
			res.CRLNumber = crl.Number
		}
	}
	return res
}

func (r *Revocation) crlNumber() int64 {
	if c := r.crl.Load(); c != nil {
		return c.Number
	}
	return 0
}

// refuse audits a refused revocation.
func (r *Revocation) refuse(ctx context.Context, who Actor, action Action, target string, cause error) {
	if err := appendRefusal(ctx, r.cfg.Store, who, "", action, target, cause); err != nil {
		r.cfg.Log.Error("audit append failed", "action", action, "err", err)
	}
}

// Run keeps the CRL and the OCSP cache fresh until ctx ends: every Refresh
// it re-reads the revoked certificates and rebuilds the CRL when they
// changed or half of its validity has passed, and drops stale OCSP answers.
// It builds the first CRL at once.
func (r *Revocation) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.Refresh)
	defer t.Stop()
	for {
		if err := r.Refresh(ctx); err != nil && ctx.Err() == nil {
			r.cfg.Log.Error("CRL refresh failed", "err", err)
		}
		r.sweepOCSP()
		r.refreshIssuers(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ocspKey identifies a cached OCSP response: the serial and the CertID hash
// the request used (the response echoes it).
type ocspKey struct {
	serial string
	hash   crypto.Hash
}

type ocspEntry struct {
	der        []byte
	thisUpdate time.Time
	nextUpdate time.Time
	reuseUntil time.Time
	status     string // OCSPGood or OCSPRevoked, for Metrics
}

// ocspHashes are the CertID hashes golang.org/x/crypto/ocsp parses.
var ocspHashes = []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512}

// clearOCSP drops every cached OCSP answer (a revocation this replica did
// not make: which serial is not known).
func (r *Revocation) clearOCSP() {
	r.ocspMu.Lock()
	defer r.ocspMu.Unlock()
	clear(r.ocspCache)
}

func (r *Revocation) invalidateOCSP(serial string) {
	r.ocspMu.Lock()
	defer r.ocspMu.Unlock()
	for _, h := range ocspHashes {
		delete(r.ocspCache, ocspKey{serial, h})
	}
}

func (r *Revocation) sweepOCSP() {
	now := r.cfg.Now()
	r.ocspMu.Lock()
	defer r.ocspMu.Unlock()
	for k, e := range r.ocspCache {
		if !now.Before(e.reuseUntil) {
			delete(r.ocspCache, k)
		}
	}
}
