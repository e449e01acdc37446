package mtls

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"devpki/pkg/pki"
)

// RevokedError is returned (wrapped) for a peer chain holding a revoked
// certificate. It matches ErrRevoked with errors.Is.
type RevokedError struct {
	Serial    *big.Int
	Subject   string
	Reason    int // RFC 5280 CRLReason; 0 when absent (unspecified)
	RevokedAt time.Time
}

func (e *RevokedError) Error() string {
	return fmt.Sprintf("certificate %s (serial %s) revoked at %s, reason %d",
		e.Subject, e.Serial.Text(16), e.RevokedAt.UTC().Format(time.RFC3339), e.Reason)
}

// Is reports whether target is ErrRevoked.
func (e *RevokedError) Is(target error) bool { return target == ErrRevoked }

// crlState is one verified CRL, immutable once published.
type crlState struct {
	issuer     *x509.Certificate
	issuerKey  string // RawSubject + RawSubjectPublicKeyInfo of the issuer
	number     *big.Int
	thisUpdate time.Time
	nextUpdate time.Time
	confirmed  time.Time // last successful fetch that returned it (or a 304)
	raw        []byte
	etag       string
	idp        *pki.IDP              // nil: a full CRL
	revoked    map[string]revocation // key: big-endian serial bytes
}

type revocation struct {
	at     time.Time
	reason int
}

// crlSource is one configured CRL location and what it last yielded.
type crlSource struct {
	url, file string
	// partition: a partition CRL named by peers' CRL distribution points
	// (Options.CRLPartitions); its CRL must carry an issuing distribution
	// point naming url. A configured source must carry none (a full CRL).
	partition   bool
	state       atomic.Pointer[crlState]
	lastAttempt atomic.Int64 // on-demand fetches of a partition source
}

// crlCache keeps the CRLs of every source fresh and answers lookups.
type crlCache struct {
	s           *Source
	hc          *http.Client
	sources     []*crlSource
	mu          sync.Mutex // serializes refreshes
	lastAttempt atomic.Int64

	// partPrefix is CRLURL + "/p/" when Options.CRLPartitions is set.
	partPrefix string
	partsMu    sync.Mutex
	parts      map[string]*crlSource // partition sources met in peers' certificates, by URL
}

func newCRLCache(s *Source, hc *http.Client) (*crlCache, error) {
	c := &crlCache{s: s, hc: hc}
	urls := s.opts.CRLURLs
	if s.opts.CRLURL != "" {
		urls = append([]string{s.opts.CRLURL}, urls...)
	}
	for _, cu := range urls {
		u, err := url.Parse(cu)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("CRL URL %q is not an absolute http(s) URL", cu)
		}
		c.sources = append(c.sources, &crlSource{url: cu})
	}
	if s.opts.CRLURL != "" && s.opts.CRLPartitions {
		c.partPrefix = strings.TrimSuffix(s.opts.CRLURL, "/") + "/p/"
		c.parts = make(map[string]*crlSource)
	}
	if s.opts.CRLFile != "" {
		c.sources = append(c.sources, &crlSource{file: s.opts.CRLFile})
	}
	return c, nil
}

// refresh fetches every source and returns the first error; a source whose
// fetch fails keeps its state.
func (c *crlCache) refresh(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refreshLocked(ctx)
}

// refreshIfDue refreshes unless an attempt started less than
// minOnDemandRefresh ago (concurrent stale handshakes fetch once).
func (c *crlCache) refreshIfDue() {
	if c.s.now().UnixNano()-c.lastAttempt.Load() < int64(minOnDemandRefresh) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.s.now().UnixNano()-c.lastAttempt.Load() < int64(minOnDemandRefresh) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), onDemandTimeout)
	defer cancel()
	if err := c.refreshLocked(ctx); err != nil {
		c.s.log.Warn("mtls: on-demand CRL refresh failed", "err", err)
	}
}

func (c *crlCache) refreshLocked(ctx context.Context) error {
	c.lastAttempt.Store(c.s.now().UnixNano())
	var first error
	for _, src := range append(c.sources, c.partitionSources()...) {
		if err := c.refreshOne(ctx, src); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (c *crlCache) partitionSources() []*crlSource {
	c.partsMu.Lock()
	defer c.partsMu.Unlock()
	out := make([]*crlSource, 0, len(c.parts))
	for _, src := range c.parts {
		out = append(out, src)
	}
	return out
}

// partitionOf returns the partition source a leaf's CRL distribution point
// names under CRLURL (made on first sight, at most pki.MaxCRLPartitions),
// or nil: the full CRL covers it.
func (c *crlCache) partitionOf(leaf *x509.Certificate) *crlSource {
	if c.partPrefix == "" {
		return nil
	}
	for _, dp := range leaf.CRLDistributionPoints {
		n, ok := strings.CutPrefix(dp, c.partPrefix)
		if !ok {
			continue
		}
		if _, err := pki.ParseCRLPartition(n); err != nil {
			continue
		}
		c.partsMu.Lock()
		defer c.partsMu.Unlock()
		src := c.parts[dp]
		if src == nil && len(c.parts) < pki.MaxCRLPartitions {
			src = &crlSource{url: dp, partition: true}
			c.parts[dp] = src
		}
		return src
	}
	return nil
}

// partitionState returns the partition CRL of src issued by issuer,
// fetched now if none is held or it is not fresh (at most once a second
// per partition); nil when there is none.
func (c *crlCache) partitionState(src *crlSource, issuer *x509.Certificate) *crlState {
	st := src.state.Load()
	if st == nil || !c.fresh(st, c.s.now()) || !sameCA(st.issuer, issuer) {
		now := c.s.now().UnixNano()
		if last := src.lastAttempt.Load(); now-last >= int64(minOnDemandRefresh) && src.lastAttempt.CompareAndSwap(last, now) {
			ctx, cancel := context.WithTimeout(context.Background(), onDemandTimeout)
			c.mu.Lock()
			err := c.refreshOne(ctx, src)
			c.mu.Unlock()
			cancel()
			if err != nil {
				c.s.log.Warn("mtls: on-demand partition CRL fetch failed", "url", src.url, "err", err)
			}
		}
		st = src.state.Load()
	}
	if st == nil || !sameCA(st.issuer, issuer) {
		return nil
	}
	return st
}

func sameCA(a, b *x509.Certificate) bool {
	return bytes.Equal(a.RawSubject, b.RawSubject) && bytes.Equal(a.RawSubjectPublicKeyInfo, b.RawSubjectPublicKeyInfo)
}

func (c *crlCache) refreshOne(ctx context.Context, src *crlSource) error {
	held := src.state.Load()
	where := src.url
	var raw []byte
	var etag string
	if src.file != "" {
		where = src.file
		b, err := os.ReadFile(src.file)
		if err != nil {
			return fmt.Errorf("read CRL: %w", err)
		}
		raw = b
	} else {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src.url, nil)
		if err != nil {
			return fmt.Errorf("fetch CRL %s: %w", src.url, err)
		}
		if held != nil && held.etag != "" {
			req.Header.Set("If-None-Match", held.etag)
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			return fmt.Errorf("fetch CRL: %w", err)
		}
		defer resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
		case http.StatusNotModified:
			if held == nil {
				return fmt.Errorf("fetch CRL %s: 304 without a held CRL", src.url)
			}
			raw = held.raw
		default:
			return fmt.Errorf("fetch CRL %s: HTTP %s", src.url, resp.Status)
		}
		if raw == nil {
			if raw, err = io.ReadAll(io.LimitReader(resp.Body, maxCRLBytes+1)); err != nil {
				return fmt.Errorf("fetch CRL %s: %w", src.url, err)
			}
			if len(raw) > maxCRLBytes {
				return fmt.Errorf("fetch CRL %s: %w: larger than %d bytes", src.url, ErrBadCRL, maxCRLBytes)
			}
		}
		etag = resp.Header.Get("ETag")
	}
	now := c.s.now()
	if held != nil && bytes.Equal(raw, held.raw) {
		if !now.Before(held.nextUpdate.Add(DefaultCRLGrace)) {
			return fmt.Errorf("CRL %s: %w: expired at %s and not renewed", where, ErrBadCRL, held.nextUpdate.UTC().Format(time.RFC3339))
		}
		st := *held
		st.confirmed = now
		if etag != "" {
			st.etag = etag
		}
		src.state.Store(&st)
		return nil
	}
	st, err := c.parse(raw, now)
	if err != nil {
		return fmt.Errorf("CRL %s: %w", where, err)
	}
	// A CRL's scope is its issuing distribution point (RFC 5280 §5.2.5): a
	// partition CRL covers only the certificates naming its URL; a full
	// CRL has none.
	switch {
	case src.partition && (st.idp == nil || st.idp.URI != src.url):
		return fmt.Errorf("CRL %s: %w: its issuing distribution point %v does not name it", where, ErrBadCRL, st.idp)
	case !src.partition && st.idp != nil:
		return fmt.Errorf("CRL %s: %w: a partition CRL (issuing distribution point %s), not a full CRL", where, ErrBadCRL, st.idp.URI)
	}
	st.etag = etag
	if held != nil && held.issuerKey == st.issuerKey {
		switch st.number.Cmp(held.number) {
		case -1:
			return fmt.Errorf("CRL %s: %w: number %s, held %s", where, ErrCRLRollback, st.number, held.number)
		case 0:
			if st.thisUpdate.Before(held.thisUpdate) {
				return fmt.Errorf("CRL %s: %w: same number %s with an older thisUpdate", where, ErrCRLRollback, st.number)
			}
		}
	}
	src.state.Store(st)
	if held == nil || held.number.Cmp(st.number) != 0 {
		c.s.log.Info("mtls: CRL updated", "source", where, "number", st.number, "revoked", len(st.revoked),
			"next_update", st.nextUpdate)
	}
	return nil
}

// parse checks a DER or PEM CRL: signed by a trusted issuer, carrying a CRL
// number and a nextUpdate, not expired.
func (c *crlCache) parse(raw []byte, now time.Time) (*crlState, error) {
	der := raw
	if b, _ := pem.Decode(raw); b != nil && b.Type == "X509 CRL" {
		der = b.Bytes
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCRL, err)
	}
	var issuer *x509.Certificate
	for _, cand := range c.s.issuers {
		if bytes.Equal(cand.RawSubject, rl.RawIssuer) && rl.CheckSignatureFrom(cand) == nil {
			issuer = cand
			break
		}
	}
	if issuer == nil {
		return nil, fmt.Errorf("%w: issuer %s", ErrCRLSignature, rl.Issuer)
	}
	if rl.Number == nil {
		return nil, fmt.Errorf("%w: no CRL number", ErrBadCRL)
	}
	if rl.NextUpdate.IsZero() {
		return nil, fmt.Errorf("%w: no nextUpdate", ErrBadCRL)
	}
	if !now.Before(rl.NextUpdate.Add(DefaultCRLGrace)) {
		return nil, fmt.Errorf("%w: expired at %s", ErrBadCRL, rl.NextUpdate.UTC().Format(time.RFC3339))
	}
	idp, err := pki.ParseIDP(rl)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCRL, err)
	}
	st := &crlState{
		issuer: issuer, issuerKey: string(issuer.RawSubject) + string(issuer.RawSubjectPublicKeyInfo),
		number: rl.Number, thisUpdate: rl.ThisUpdate, nextUpdate: rl.NextUpdate, confirmed: now, raw: raw, idp: idp,
		revoked: make(map[string]revocation, len(rl.RevokedCertificateEntries)),
	}
	for _, e := range rl.RevokedCertificateEntries {
		st.revoked[string(e.SerialNumber.Bytes())] = revocation{at: e.RevocationTime, reason: e.ReasonCode}
	}
	return st, nil
}

// fresh reports whether st may be relied on at now.
func (c *crlCache) fresh(st *crlState, now time.Time) bool {
	if !now.Before(st.nextUpdate.Add(DefaultCRLGrace)) {
		return false
	}
	return c.s.opts.MaxCRLStaleness == 0 || now.Sub(st.confirmed) <= c.s.opts.MaxCRLStaleness
}

// lookup returns the held CRL of issuer, or nil.
func (c *crlCache) lookup(issuer *x509.Certificate) *crlState {
	for _, src := range c.sources {
		if st := src.state.Load(); st != nil && bytes.Equal(st.issuer.RawSubject, issuer.RawSubject) &&
			bytes.Equal(st.issuer.RawSubjectPublicKeyInfo, issuer.RawSubjectPublicKeyInfo) {
			return st
		}
	}
	return nil
}

// check refuses a verified chain (leaf first, anchor last) that holds a
// revoked certificate, or whose leaf's issuer has no fresh CRL (unless
// FailOpen). A stale CRL triggers a fetch, at most once per second.
func (c *crlCache) check(chain []*x509.Certificate) error {
	if len(chain) < 2 {
		return fmt.Errorf("%w: chain without an issuer", ErrCRLStale)
	}
	now := c.s.now()
	var st *crlState
	if src := c.partitionOf(chain[0]); src != nil {
		// The leaf names its partition CRL: that one covers it.
		st = c.partitionState(src, chain[1])
		now = c.s.now()
	} else {
		st = c.lookup(chain[1])
		if st == nil || !c.fresh(st, now) {
			c.refreshIfDue()
			now = c.s.now()
			st = c.lookup(chain[1])
		}
	}
	var buf [32]byte
	for i := 0; i+1 < len(chain); i++ {
		var crl *crlState
		if i == 0 {
			crl = st
		} else {
			crl = c.lookup(chain[i+1])
		}
		if crl == nil {
			continue
		}
		if r, ok := crl.revoked[string(serialKey(&buf, chain[i].SerialNumber))]; ok {
			return &RevokedError{Serial: chain[i].SerialNumber, Subject: chain[i].Subject.String(), Reason: r.reason, RevokedAt: r.at}
		}
	}
	if st == nil || !c.fresh(st, now) {
		if c.s.opts.FailOpen {
			c.s.log.Warn("mtls: no fresh CRL; accepting the peer (FailOpen)", "issuer", chain[1].Subject.String())
			return nil
		}
		return fmt.Errorf("%w for issuer %s", ErrCRLStale, chain[1].Subject)
	}
	return nil
}

// serialKey returns sn's big-endian bytes (as big.Int.Bytes does) without
// allocating for serials of up to 32 bytes (RFC 5280 allows 20).
func serialKey(buf *[32]byte, sn *big.Int) []byte {
	n := (sn.BitLen() + 7) / 8
	if n > len(buf) {
		return sn.Bytes()
	}
	return sn.FillBytes(buf[:n])
}
