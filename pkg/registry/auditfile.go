package registry

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// An audit export is JSON lines: a header line, one line per event in Seq
// order, and an end line.
//
//	{"type":"header","format":1,"scope":"global"|"tenant","tenant":"<id>","since":"<RFC 3339>","checkpoint":{...}}
//	{"type":"event","seq":7,"time":"...","tenant_id":"...","actor":"...",...,"prev_hash":"<hex>","hash":"<hex>",
//	 "tenant_seq":3,"tenant_prev_hash":"<hex>","tenant_hash":"<hex>"}
//	{"type":"end","events":N,"last_seq":S,"last_hash":"<hex>"}
//
// A global export is verified on the global chain (seq, prev_hash, hash) and
// each tenant chain inside it; a tenant export on its tenant chain
// (tenant_seq, tenant_prev_hash, tenant_hash), which holds that tenant's
// events only.

// ExportFormat is the format number written in the header line.
const ExportFormat = 1

// Export scopes.
const (
	ScopeGlobal = "global"
	ScopeTenant = "tenant"
)

// ExportHeader is the first line of an export.
type ExportHeader struct {
	Type   string `json:"type"` // "header"
	Format int    `json:"format"`
	Scope  string `json:"scope"`
	// Tenant is the tenant chain of a tenant export.
	Tenant string `json:"tenant,omitempty"`
	// Since, when set, says the export starts at the first event at or
	// after it: its first event is trusted for its previous hash.
	Since string `json:"since,omitempty"`
	// Checkpoint is the newest prune checkpoint; a tenant export carries
	// its own tenant's head only.
	Checkpoint *ExportCheckpoint `json:"checkpoint,omitempty"`
}

// ExportCheckpoint is AuditCheckpoint in an export.
type ExportCheckpoint struct {
	Seq       int64              `json:"seq"`
	Hash      string             `json:"hash"`
	Before    time.Time          `json:"before"`
	Time      time.Time          `json:"time"`
	Tenants   []ExportTenantHead `json:"tenants,omitempty"`
	Signer    []byte             `json:"signer"` // DER, base64
	Algorithm string             `json:"algorithm"`
	Signature []byte             `json:"signature"`
}

// ExportTenantHead is AuditTenantHead in an export.
type ExportTenantHead struct {
	Tenant    string `json:"tenant"`
	Seq       int64  `json:"seq"`
	Hash      string `json:"hash"`
	Signature []byte `json:"signature"`
}

// ExportEvent is one event line.
type ExportEvent struct {
	Type           string `json:"type"` // "event"
	Seq            int64  `json:"seq"`
	Time           string `json:"time"` // RFC 3339 with nanoseconds, as hashed
	TenantID       string `json:"tenant_id"`
	Actor          string `json:"actor"`
	Action         string `json:"action"`
	Target         string `json:"target"`
	Result         string `json:"result"`
	Detail         string `json:"detail"`
	SourceAddr     string `json:"source_addr"`
	PrevHash       string `json:"prev_hash"`
	Hash           string `json:"hash"`
	TenantSeq      int64  `json:"tenant_seq"`
	TenantPrevHash string `json:"tenant_prev_hash"`
	TenantHash     string `json:"tenant_hash"`
}

// ExportEnd is the last line: a missing one means the export was cut.
type ExportEnd struct {
	Type     string `json:"type"` // "end"
	Events   int    `json:"events"`
	LastSeq  int64  `json:"last_seq"`
	LastHash string `json:"last_hash"`
}

// ExportCheckpointOf is cp as an export carries it: tenant "" keeps every
// tenant head, another tenant id only its own.
func ExportCheckpointOf(cp *AuditCheckpoint, tenant string) *ExportCheckpoint {
	if cp == nil {
		return nil
	}
	out := &ExportCheckpoint{Seq: cp.Seq, Hash: hex.EncodeToString(cp.Hash), Before: cp.Before.UTC(), Time: cp.Time.UTC(),
		Signer: cp.Signer, Algorithm: cp.Algorithm, Signature: cp.Signature}
	for _, h := range cp.Tenants {
		if tenant == "" || h.TenantID == tenant {
			out.Tenants = append(out.Tenants, ExportTenantHead{Tenant: h.TenantID, Seq: h.Seq,
				Hash: hex.EncodeToString(h.Hash), Signature: h.Signature})
		}
	}
	return out
}

func (c *ExportCheckpoint) domain() (*AuditCheckpoint, error) {
	h, err := hex.DecodeString(c.Hash)
	if err != nil {
		return nil, fmt.Errorf("checkpoint hash: %v", err)
	}
	cp := &AuditCheckpoint{Seq: c.Seq, Hash: h, Before: c.Before, Time: c.Time, Signer: c.Signer,
		Algorithm: c.Algorithm, Signature: c.Signature}
	for _, t := range c.Tenants {
		th, err := hex.DecodeString(t.Hash)
		if err != nil {
			return nil, fmt.Errorf("checkpoint tenant %s hash: %v", t.Tenant, err)
		}
		cp.Tenants = append(cp.Tenants, AuditTenantHead{TenantID: t.Tenant, Seq: t.Seq, Hash: th, Signature: t.Signature})
	}
	return cp, nil
}

// ExportEventOf is ev as an export line.
func ExportEventOf(ev *AuditEvent) *ExportEvent {
	return &ExportEvent{Type: "event", Seq: ev.Seq, Time: ev.Time.UTC().Format(time.RFC3339Nano), TenantID: ev.TenantID,
		Actor: ev.Actor, Action: ev.Action, Target: ev.Target, Result: ev.Result, Detail: ev.Detail,
		SourceAddr: ev.SourceAddr, PrevHash: hex.EncodeToString(ev.PrevHash), Hash: hex.EncodeToString(ev.Hash),
		TenantSeq: ev.TenantSeq, TenantPrevHash: hex.EncodeToString(ev.TenantPrevHash),
		TenantHash: hex.EncodeToString(ev.TenantHash)}
}

func (e *ExportEvent) domain() (*AuditEvent, error) {
	t, err := time.Parse(time.RFC3339Nano, e.Time)
	if err != nil {
		return nil, fmt.Errorf("time %q: %v", e.Time, err)
	}
	ev := &AuditEvent{Seq: e.Seq, Time: t, TenantID: e.TenantID, Actor: e.Actor, Action: e.Action, Target: e.Target,
		Result: e.Result, Detail: e.Detail, SourceAddr: e.SourceAddr, TenantSeq: e.TenantSeq}
	for _, f := range []struct {
		dst *[]byte
		s   string
	}{{&ev.PrevHash, e.PrevHash}, {&ev.Hash, e.Hash}, {&ev.TenantPrevHash, e.TenantPrevHash}, {&ev.TenantHash, e.TenantHash}} {
		if *f.dst, err = hex.DecodeString(f.s); err != nil {
			return nil, fmt.Errorf("hash %q: %v", f.s, err)
		}
	}
	return ev, nil
}

// ExportWriter writes an export: NewExportWriter writes the header, Event
// each event, Close the end line.
type ExportWriter struct {
	w      *bufio.Writer
	events int
	last   ExportEnd
	tenant bool
}

// NewExportWriter writes h (Type and Format filled in) to w.
func NewExportWriter(w io.Writer, h ExportHeader) (*ExportWriter, error) {
	h.Type, h.Format = "header", ExportFormat
	if h.Scope == "" {
		h.Scope = ScopeGlobal
	}
	x := &ExportWriter{w: bufio.NewWriterSize(w, 64<<10), tenant: h.Scope == ScopeTenant}
	return x, x.line(&h)
}

// Event writes one event.
func (x *ExportWriter) Event(ev *AuditEvent) error {
	x.events++
	x.last.LastSeq, x.last.LastHash = ev.Seq, hex.EncodeToString(ev.Hash)
	if x.tenant {
		x.last.LastSeq, x.last.LastHash = ev.TenantSeq, hex.EncodeToString(ev.TenantHash)
	}
	return x.line(ExportEventOf(ev))
}

// Close writes the end line and flushes.
func (x *ExportWriter) Close() error {
	x.last.Type, x.last.Events = "end", x.events
	if err := x.line(&x.last); err != nil {
		return err
	}
	return x.w.Flush()
}

func (x *ExportWriter) line(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	_, err = x.w.Write(b)
	return err
}

// ExportLineError names the first line of an export that does not verify.
type ExportLineError struct {
	Line   int // 1-based
	Reason string
}

func (e *ExportLineError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Reason) }

// Unwrap makes every ExportLineError an ErrAuditChain.
func (e *ExportLineError) Unwrap() error { return ErrAuditChain }

// ExportReport is what a verified export proves.
type ExportReport struct {
	Scope, Tenant     string
	Events            int
	FirstSeq, LastSeq int64 // of the verified chain (tenant seqs for a tenant export)
	LastHash          []byte
	// Anchor says where the chain was verified from: "genesis" (the
	// chain's first event), "checkpoint" (a signed prune checkpoint), or
	// "first event" (the recorded previous hash of an export made with
	// --since, or of an empty one: nothing before it is proved).
	Anchor string
	// Signer is the checkpoint's signer when the export has one;
	// RootChecked says whether it was checked to chain to a given root.
	Signer      *x509.Certificate
	RootChecked bool
}

// VerifyExport checks an export read from r offline: every line parses,
// every event's hash matches its content and its previous hash the line
// before it, no event is missing, repeated or out of order, the end line is
// there and agrees, and a checkpoint, when present, is signed by its signer
// (which must chain to root when root is not nil). The first bad line is
// named in an *ExportLineError.
func VerifyExport(r io.Reader, root *x509.Certificate) (*ExportReport, error) {
	lr := &lineReader{sc: bufio.NewScanner(r)}
	lr.sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	v := &exportVerifier{lr: lr, root: root, tenants: map[string]*chainState{}}
	return v.run()
}

type parsedLine struct {
	n   int
	typ string
	raw []byte
	ev  *AuditEvent
	err error // a line that does not parse
	eof bool
}

// lineReader reads lines with a lookahead.
type lineReader struct {
	sc    *bufio.Scanner
	n     int
	ahead []*parsedLine
	err   error
}

func (lr *lineReader) fill(k int) {
	for len(lr.ahead) <= k {
		lr.n++
		if !lr.sc.Scan() {
			if err := lr.sc.Err(); err != nil && lr.err == nil {
				lr.err = err
			}
			lr.ahead = append(lr.ahead, &parsedLine{n: lr.n, eof: true})
			continue
		}
		raw := append([]byte(nil), lr.sc.Bytes()...)
		p := &parsedLine{n: lr.n, raw: raw}
		var t struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(raw, &t); err != nil {
			p.err = fmt.Errorf("not a JSON object (%v): truncated or edited", err)
		} else {
			p.typ = t.Type
			if t.Type == "event" {
				var e ExportEvent
				dec := json.NewDecoder(bytes.NewReader(raw))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&e); err != nil {
					p.err = fmt.Errorf("malformed event: %v", err)
				} else if p.ev, err = e.domain(); err != nil {
					p.err = fmt.Errorf("malformed event: %v", err)
				}
			}
		}
		lr.ahead = append(lr.ahead, p)
	}
}

func (lr *lineReader) peek(k int) *parsedLine {
	lr.fill(k)
	return lr.ahead[k]
}

func (lr *lineReader) next() *parsedLine {
	p := lr.peek(0)
	lr.ahead = lr.ahead[1:]
	return p
}

type chainState struct {
	seq  int64
	hash []byte
}

type exportVerifier struct {
	lr      *lineReader
	root    *x509.Certificate
	hdr     ExportHeader
	cp      *AuditCheckpoint
	rep     ExportReport
	tenants map[string]*chainState // a global export's tenant chains
	// The chain being verified: global, or the header's tenant.
	started bool
	seq     int64
	hash    []byte
	prevRaw []byte // the hash before the last event, for naming an inserted line
}

func lineErr(n int, format string, args ...any) error {
	return &ExportLineError{Line: n, Reason: fmt.Sprintf(format, args...)}
}

func (v *exportVerifier) tenantScope() bool { return v.hdr.Scope == ScopeTenant }

// seqOf, prevOf, hashOf and sum read ev on the verified chain.
func (v *exportVerifier) seqOf(ev *AuditEvent) int64 {
	if v.tenantScope() {
		return ev.TenantSeq
	}
	return ev.Seq
}

func (v *exportVerifier) prevOf(ev *AuditEvent) []byte {
	if v.tenantScope() {
		return ev.TenantPrevHash
	}
	return ev.PrevHash
}

func (v *exportVerifier) hashOf(ev *AuditEvent) []byte {
	if v.tenantScope() {
		return ev.TenantHash
	}
	return ev.Hash
}

func (v *exportVerifier) sum(prev []byte, ev *AuditEvent) []byte {
	if v.tenantScope() {
		return AuditTenantHash(prev, ev)
	}
	return AuditHash(prev, ev)
}

func (v *exportVerifier) name(ev *AuditEvent) string {
	if v.tenantScope() {
		return fmt.Sprintf("event %d (tenant seq %d)", ev.Seq, ev.TenantSeq)
	}
	return fmt.Sprintf("event %d", ev.Seq)
}

func (v *exportVerifier) run() (*ExportReport, error) {
	if err := v.header(); err != nil {
		return nil, err
	}
	for {
		p := v.lr.next()
		switch {
		case p.eof:
			if v.lr.err != nil {
				return nil, lineErr(p.n, "unreadable: %v", v.lr.err)
			}
			return nil, lineErr(p.n, "the export ends without its end line: truncated")
		case p.err != nil:
			return nil, lineErr(p.n, "%v", p.err)
		case p.typ == "end":
			return v.end(p)
		case p.typ != "event":
			return nil, lineErr(p.n, "unexpected line type %q", p.typ)
		}
		if err := v.event(p); err != nil {
			return nil, err
		}
	}
}

func (v *exportVerifier) header() error {
	p := v.lr.next()
	if p.eof {
		return lineErr(p.n, "empty export: no header line")
	}
	if p.err != nil {
		return lineErr(p.n, "%v", p.err)
	}
	dec := json.NewDecoder(bytes.NewReader(p.raw))
	dec.DisallowUnknownFields()
	if p.typ != "header" || dec.Decode(&v.hdr) != nil {
		return lineErr(p.n, "not an audit export header")
	}
	if v.hdr.Format != ExportFormat {
		return lineErr(p.n, "export format %d, want %d", v.hdr.Format, ExportFormat)
	}
	switch v.hdr.Scope {
	case ScopeGlobal:
	case ScopeTenant:
		if v.hdr.Tenant == "" {
			return lineErr(p.n, "tenant export without a tenant")
		}
	default:
		return lineErr(p.n, "unknown scope %q", v.hdr.Scope)
	}
	v.rep.Scope, v.rep.Tenant, v.rep.Anchor = v.hdr.Scope, v.hdr.Tenant, "first event"
	if v.hdr.Checkpoint != nil {
		cp, err := v.hdr.Checkpoint.domain()
		if err != nil {
			return lineErr(p.n, "%v", err)
		}
		tenant := "*"
		if v.tenantScope() {
			tenant = v.hdr.Tenant
		}
		signer, err := VerifyCheckpoint(cp, v.root, tenant)
		if err != nil {
			return lineErr(p.n, "checkpoint: %v", err)
		}
		v.cp, v.rep.Signer, v.rep.RootChecked = cp, signer, v.root != nil
	}
	return nil
}

// start anchors the chain at the first event, p.
func (v *exportVerifier) start(p *parsedLine) error {
	ev := p.ev
	seq, prev := v.seqOf(ev), v.prevOf(ev)
	zero := make([]byte, sha256.Size)
	var cpSeq int64
	var cpHash []byte
	if v.cp != nil {
		cpSeq, cpHash = v.cp.Seq, v.cp.Hash
		if v.tenantScope() {
			cpSeq, cpHash = 0, nil
			if h := v.cp.Tenant(v.hdr.Tenant); h != nil {
				cpSeq, cpHash = h.Seq, h.Hash
			}
		}
	}
	switch {
	case cpHash != nil && seq == cpSeq+1:
		if !bytes.Equal(prev, cpHash) {
			return lineErr(p.n, "%s: previous hash does not match the signed checkpoint", v.name(ev))
		}
		v.rep.Anchor = "checkpoint"
	case cpHash == nil && seq == 1:
		if !bytes.Equal(prev, zero) {
			return lineErr(p.n, "%s: the first event's previous hash is not the zero hash", v.name(ev))
		}
		v.rep.Anchor = "genesis"
	case v.hdr.Since != "" && seq > cpSeq:
		// Trusted for its previous hash: nothing before it is proved.
	default:
		want := cpSeq + 1
		return lineErr(p.n, "%s: the export starts at seq %d but should start at %d (no --since): event(s) missing before it (deleted)",
			v.name(ev), seq, want)
	}
	v.rep.FirstSeq = seq
	v.started = true
	v.seq, v.hash = seq-1, prev
	return nil
}

func (v *exportVerifier) event(p *parsedLine) error {
	ev := p.ev
	if v.tenantScope() && AuditChain(ev.TenantID) != v.hdr.Tenant {
		return lineErr(p.n, "%s belongs to tenant %q, not to this export's tenant %q (inserted)", v.name(ev),
			AuditChain(ev.TenantID), v.hdr.Tenant)
	}
	if !v.started {
		if err := v.start(p); err != nil {
			return err
		}
	}
	want := v.seq + 1
	seq := v.seqOf(ev)
	ok := func(ev *AuditEvent, prev []byte) bool {
		return bytes.Equal(v.prevOf(ev), prev) && bytes.Equal(v.sum(prev, ev), v.hashOf(ev))
	}
	if seq != want || !ok(ev, v.hash) {
		// Name what happened, looking one line ahead.
		next := v.lr.peek(0)
		nextOK := next.ev != nil && v.seqOf(next.ev) == want && ok(next.ev, v.hash)
		switch {
		case seq == v.seq && bytes.Equal(v.hashOf(ev), v.hash):
			return lineErr(p.n, "%s: repeated: the same event as line %d", v.name(ev), p.n-1)
		case seq == v.seq && v.prevRaw != nil && ok(ev, v.prevRaw):
			return lineErr(p.n-1, "inserted: line %d carries the same seq %d and continues the chain from line %d", p.n, seq, p.n-2)
		case nextOK:
			if seq == want {
				return lineErr(p.n, "%s: inserted: the next line carries seq %d and continues the chain", v.name(ev), want)
			}
			return lineErr(p.n, "%s: out of order: seq %d expected here, found at line %d (reordered)", v.name(ev), want, next.n)
		case seq == want && !bytes.Equal(v.prevOf(ev), v.hash):
			return lineErr(p.n, "%s: previous hash does not match line %d's hash (the line before was replaced, or this one forged)",
				v.name(ev), p.n-1)
		case seq == want:
			return lineErr(p.n, "%s: content does not match its hash (edited)", v.name(ev))
		case seq > want && next.ev != nil && v.seqOf(next.ev) < seq:
			return lineErr(p.n, "%s: out of order: seq %d expected here (reordered)", v.name(ev), want)
		case seq == want+1:
			return lineErr(p.n, "%s: seq %d missing before it (deleted)", v.name(ev), want)
		case seq > want:
			return lineErr(p.n, "%s: seq %d to %d missing before it (deleted)", v.name(ev), want, seq-1)
		default:
			return lineErr(p.n, "%s: seq %d goes back (expected %d): repeated, inserted or reordered", v.name(ev), seq, want)
		}
	}
	if !v.tenantScope() {
		if err := v.tenantChain(p); err != nil {
			return err
		}
	}
	v.prevRaw = v.hash
	v.seq, v.hash = seq, v.hashOf(ev)
	v.rep.Events++
	v.rep.LastSeq, v.rep.LastHash = seq, v.hash
	return nil
}

// tenantChain checks, in a global export, the tenant-chain fields of an
// event: each tenant's events chain too, from the first one seen.
func (v *exportVerifier) tenantChain(p *parsedLine) error {
	ev := p.ev
	id := AuditChain(ev.TenantID)
	st := v.tenants[id]
	if st == nil {
		st = &chainState{seq: ev.TenantSeq - 1, hash: ev.TenantPrevHash}
		if v.rep.Anchor != "first event" {
			// A complete export: the tenant chain starts at zero or at its
			// checkpoint head.
			st = &chainState{hash: make([]byte, sha256.Size)}
			if v.cp != nil {
				if h := v.cp.Tenant(id); h != nil {
					st = &chainState{seq: h.Seq, hash: h.Hash}
				}
			}
		}
		v.tenants[id] = st
	}
	if ev.TenantSeq != st.seq+1 || !bytes.Equal(ev.TenantPrevHash, st.hash) {
		return lineErr(p.n, "event %d: tenant %s chain: tenant seq %d does not follow %d", ev.Seq, id, ev.TenantSeq, st.seq)
	}
	if !bytes.Equal(AuditTenantHash(st.hash, ev), ev.TenantHash) {
		return lineErr(p.n, "event %d: tenant %s chain: tenant hash does not match its content (edited)", ev.Seq, id)
	}
	st.seq, st.hash = ev.TenantSeq, ev.TenantHash
	return nil
}

func (v *exportVerifier) end(p *parsedLine) (*ExportReport, error) {
	var e ExportEnd
	dec := json.NewDecoder(bytes.NewReader(p.raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return nil, lineErr(p.n, "malformed end line: %v", err)
	}
	if e.Events != v.rep.Events {
		return nil, lineErr(p.n, "end line counts %d events, the export has %d (lines deleted or inserted)", e.Events, v.rep.Events)
	}
	if v.rep.Events > 0 && (e.LastSeq != v.rep.LastSeq || e.LastHash != hex.EncodeToString(v.rep.LastHash)) {
		return nil, lineErr(p.n, "end line names seq %d, the last event is %d", e.LastSeq, v.rep.LastSeq)
	}
	if extra := v.lr.next(); !extra.eof {
		return nil, lineErr(extra.n, "line after the end line")
	}
	if v.rep.Events == 0 && v.cp != nil {
		v.rep.Anchor = "checkpoint"
	}
	return &v.rep, nil
}
