package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// AuditStore is the audit log beyond appending chained events: the bounded
// log of anonymous refusals, exports, and pruning behind a signed
// checkpoint. *sqlstore.Store implements it.
type AuditStore interface {
	// RecordRefusal counts one anonymous refusal into its aggregate: the
	// row of (Window, SourceAddr, Action, Reason, TenantID) gets Count+1
	// and Last, or is created with Count 1, First = Last and r.Sample.
	// Window is r.Last truncated to RefusalWindow (zero Last means now).
	// The table keeps at most the store's refusal cap of rows, dropping
	// the oldest (lowest ID) when a new row would exceed it.
	RecordRefusal(ctx context.Context, r *Refusal) error
	// ListRefusals returns up to limit aggregates with ID > afterID, in ID
	// order. A limit of 0 or less means 100.
	ListRefusals(ctx context.Context, afterID int64, limit int) ([]*Refusal, error)
	// ListAuditEvents returns up to f.Limit chained events matching f, in Seq
	// order, with their tenant-chain fields.
	ListAuditEvents(ctx context.Context, f AuditFilter) ([]*AuditEvent, error)
	// GetAuditCheckpoint returns the newest checkpoint, or ErrNotFound when the
	// log was never pruned.
	GetAuditCheckpoint(ctx context.Context) (*AuditCheckpoint, error)
	// PlanAuditPrune returns the unsigned checkpoint that pruning every
	// event older than before would leave: the last such event's Seq and
	// Hash and, for each tenant chain, its head as of that event. Nothing
	// to prune is ErrNotFound.
	PlanAuditPrune(ctx context.Context, before time.Time) (*AuditCheckpoint, error)
	// PruneAudit records cp (signed) and deletes every event with Seq <=
	// cp.Seq, appending audit, in one transaction. A cp that no longer
	// matches the stored chain (its event's hash differs, or a tenant head)
	// is ErrConflict and nothing is written. It returns how many events
	// were deleted.
	PruneAudit(ctx context.Context, cp *AuditCheckpoint, audit *AuditEvent) (int64, error)
}

// RefusalWindow is the time window anonymous refusals are aggregated over.
const RefusalWindow = time.Minute

// DefaultMaxRefusals is the default cap on stored refusal aggregates.
const DefaultMaxRefusals = 10000

// Refusal aggregates the refusals of anonymous callers (no credential, an
// unknown or malformed token, a certificate of no known issuer) from one
// source, at one door, for one reason class, within one RefusalWindow.
// They are kept apart from the hash chain so that abuse cannot flood it.
type Refusal struct {
	ID         int64 // assigned by the store, increasing
	Window     time.Time
	SourceAddr string
	Action     string // the door: "enroll", "admin.denied", ...
	Reason     string // a reason class: "token-invalid", "unauthenticated", ...
	TenantID   string // the tenant the door names, if any
	Count      int64
	First      time.Time
	Last       time.Time
	Sample     string // the detail of the first refusal of the aggregate
}

// AuditFilter selects chained events for an export.
type AuditFilter struct {
	AfterSeq int64
	// Since keeps events at or after it; zero keeps all.
	Since time.Time
	// TenantID keeps one tenant chain's events (AuditChain); empty keeps
	// all.
	TenantID string
	Limit    int // 0 or less means 1000
}

// AuditChain is the tenant chain an event of tenantID belongs to: its
// tenant, and DefaultTenant's for events with no tenant (CA infrastructure,
// local commands), as provision.InScope reads them.
func AuditChain(tenantID string) string {
	if tenantID == "" {
		return DefaultTenant
	}
	return tenantID
}

// AuditTenantHash returns the tenant-chain hash of ev after the tenant
// event whose tenant hash is prev (zero bytes for a tenant's first event).
// It hashes like AuditHash, after a domain tag, with ev.TenantSeq first and
// ev.Seq second, so a tenant's subsequence of the log is itself a chain:
//
//	"devpki-audit-tenant-v1", TenantSeq, Seq, Time, TenantID, Actor, Action,
//	Target, Result, Detail, SourceAddr
//
// each field length-prefixed as in AuditHash.
func AuditTenantHash(prev []byte, ev *AuditEvent) []byte {
	h := sha256.New()
	h.Write(prev)
	for _, f := range []string{
		"devpki-audit-tenant-v1",
		strconv.FormatInt(ev.TenantSeq, 10), strconv.FormatInt(ev.Seq, 10),
		ev.Time.UTC().Format(time.RFC3339Nano),
		ev.TenantID, ev.Actor, ev.Action, ev.Target, ev.Result, ev.Detail, ev.SourceAddr,
	} {
		writeField(h, f)
	}
	return h.Sum(nil)
}

// AuditCheckpoint stands for the events a prune deleted: the last deleted
// event (Seq, Hash) of the global chain and each tenant chain's head as of
// it, signed by the CA so that verification can start at it.
type AuditCheckpoint struct {
	ID      int64     // assigned by the store
	Seq     int64     // the last pruned event
	Hash    []byte    // its hash
	Before  time.Time // events older than this were pruned
	Time    time.Time // when the checkpoint was made
	Tenants []AuditTenantHead
	// Signer is the DER certificate whose key signed (the CA's issuing
	// certificate); Algorithm an x509.SignatureAlgorithm name; Signature
	// covers SignedBytes.
	Signer    []byte
	Algorithm string
	Signature []byte
}

// AuditTenantHead is a tenant chain's head in a checkpoint, signed on its
// own (TenantSignedBytes) so that a tenant's export carries its head and not
// the other tenants'.
type AuditTenantHead struct {
	TenantID  string
	Seq       int64
	Hash      []byte
	Signature []byte
}

// SignedBytes is what a checkpoint's Signature covers: the global head.
func (c *AuditCheckpoint) SignedBytes() []byte {
	var b bytes.Buffer
	for _, f := range []string{
		"devpki-audit-checkpoint-v1", c.Time.UTC().Format(time.RFC3339Nano), c.Before.UTC().Format(time.RFC3339Nano),
		strconv.FormatInt(c.Seq, 10), string(c.Hash),
	} {
		writeField(&b, f)
	}
	return b.Bytes()
}

// TenantSignedBytes is what a tenant head's Signature covers.
func (c *AuditCheckpoint) TenantSignedBytes(h *AuditTenantHead) []byte {
	var b bytes.Buffer
	for _, f := range []string{
		"devpki-audit-checkpoint-tenant-v1", c.Time.UTC().Format(time.RFC3339Nano), c.Before.UTC().Format(time.RFC3339Nano),
		h.TenantID, strconv.FormatInt(h.Seq, 10), string(h.Hash),
	} {
		writeField(&b, f)
	}
	return b.Bytes()
}

// Tenant returns the checkpoint's head of tenant chain id, or nil.
func (c *AuditCheckpoint) Tenant(id string) *AuditTenantHead {
	for i := range c.Tenants {
		if c.Tenants[i].TenantID == id {
			return &c.Tenants[i]
		}
	}
	return nil
}

// ErrCheckpointSignature is returned when a checkpoint's signature, or its
// signer's chain to the root, does not verify.
var ErrCheckpointSignature = errors.New("registry: audit checkpoint signature does not verify")

// VerifyCheckpoint checks c's signature, and that of its tenant head
// tenantID when not empty ("*" checks every tenant head), with its Signer
// certificate, and, when root is not nil, that the Signer chains to root.
func VerifyCheckpoint(c *AuditCheckpoint, root *x509.Certificate, tenantID string) (*x509.Certificate, error) {
	signer, err := x509.ParseCertificate(c.Signer)
	if err != nil {
		return nil, fmt.Errorf("%w: signer certificate: %v", ErrCheckpointSignature, err)
	}
	if root != nil {
		pool := x509.NewCertPool()
		pool.AddCert(root)
		_, err := signer.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
			CurrentTime: c.Time})
		if err != nil && !signer.Equal(root) {
			return nil, fmt.Errorf("%w: signer %q does not chain to the CA root: %v", ErrCheckpointSignature, signer.Subject, err)
		}
	}
	alg := signatureAlgorithm(c.Algorithm)
	if alg == x509.UnknownSignatureAlgorithm {
		return nil, fmt.Errorf("%w: unknown algorithm %q", ErrCheckpointSignature, c.Algorithm)
	}
	if err := signer.CheckSignature(alg, c.SignedBytes(), c.Signature); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCheckpointSignature, err)
	}
	for i := range c.Tenants {
		h := &c.Tenants[i]
		if tenantID != "*" && h.TenantID != tenantID {
			continue
		}
		if err := signer.CheckSignature(alg, c.TenantSignedBytes(h), h.Signature); err != nil {
			return nil, fmt.Errorf("%w: tenant %s: %v", ErrCheckpointSignature, h.TenantID, err)
		}
	}
	return signer, nil
}

func signatureAlgorithm(name string) x509.SignatureAlgorithm {
	for _, a := range []x509.SignatureAlgorithm{
		x509.ECDSAWithSHA256, x509.ECDSAWithSHA384, x509.ECDSAWithSHA512,
		x509.SHA256WithRSA, x509.SHA384WithRSA, x509.SHA512WithRSA, x509.PureEd25519,
	} {
		if a.String() == name {
			return a
		}
	}
	return x509.UnknownSignatureAlgorithm
}
