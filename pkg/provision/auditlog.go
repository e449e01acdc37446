package provision

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/registry"
)

// AuditReader is what an audit export reads. *sqlstore.Store has it, and
// so does the API's read-only store.
type AuditReader interface {
	ListAuditEvents(ctx context.Context, f registry.AuditFilter) ([]*registry.AuditEvent, error)
	GetAuditCheckpoint(ctx context.Context) (*registry.AuditCheckpoint, error)
}

// ExportOptions selects what ExportAudit writes.
type ExportOptions struct {
	// Since, when not zero, starts the export at the first event at or
	// after it; verification then trusts that event's previous hash.
	Since time.Time
	// TenantID, when not empty, exports that tenant chain only (a tenant
	// export, verified on the tenant chain); empty exports every event.
	TenantID string
}

// ExportAudit writes the audit log as JSON lines (registry.ExportWriter):
// the header with the newest prune checkpoint (only the tenant's head of it
// for a tenant export), the events in order, and the end line. It returns
// how many events it wrote.
func ExportAudit(ctx context.Context, st AuditReader, opts ExportOptions, w io.Writer) (int, error) {
	h := registry.ExportHeader{Scope: registry.ScopeGlobal}
	if opts.TenantID != "" {
		h.Scope, h.Tenant = registry.ScopeTenant, opts.TenantID
	}
	if !opts.Since.IsZero() {
		h.Since = opts.Since.UTC().Format(time.RFC3339Nano)
	}
	cp, err := st.GetAuditCheckpoint(ctx)
	switch {
	case err == nil:
		h.Checkpoint = registry.ExportCheckpointOf(cp, opts.TenantID)
	case !errors.Is(err, registry.ErrNotFound):
		return 0, err
	}
	x, err := registry.NewExportWriter(w, h)
	if err != nil {
		return 0, err
	}
	n := 0
	f := registry.AuditFilter{Since: opts.Since, TenantID: opts.TenantID, Limit: 1000}
	for {
		evs, err := st.ListAuditEvents(ctx, f)
		if err != nil {
			return n, err
		}
		for _, ev := range evs {
			if err := x.Event(ev); err != nil {
				return n, err
			}
			n++
			f.AfterSeq = ev.Seq
		}
		if len(evs) < f.Limit {
			break
		}
	}
	return n, x.Close()
}

// AuditScope is the tenant chain an audit export by who covers (empty: the
// whole log). An admin of a tenant exports its tenant's chain (naming
// another tenant is ErrNotFound); a super-admin the whole log, or the chain
// of tenant when named. A tenant outside who's scope (InScope), or
// unknown, is ErrNotFound, so its existence is not revealed.
func (a *Admin) AuditScope(ctx context.Context, who Actor, tenant string) (string, error) {
	if tenant == "" {
		if who.Super {
			return "", nil
		}
		return who.TenantID, nil
	}
	t, err := a.cfg.Store.GetTenant(ctx, tenant)
	if err != nil && !errors.Is(err, registry.ErrNotFound) {
		return "", fmt.Errorf("tenant %q: %w", tenant, err)
	}
	if err != nil || !InScope(who, t.ID) {
		return "", fmt.Errorf("no tenant %q in your scope: %w", tenant, registry.ErrNotFound)
	}
	return t.ID, nil
}

// PruneStore is what PruneAudit needs. *sqlstore.Store has it.
type PruneStore interface {
	PlanAuditPrune(ctx context.Context, before time.Time) (*registry.AuditCheckpoint, error)
	PruneAudit(ctx context.Context, cp *registry.AuditCheckpoint, audit *registry.AuditEvent) (int64, error)
}

// PruneAudit deletes the audit events older than before, leaving a
// checkpoint signed with signer, the key of cert (the CA's issuing key and
// certificate): the last pruned event's seq and hash and each tenant
// chain's head, each signed, so that verification starts there. The prune
// is itself a chained event (ActionAuditPrune) by who. Nothing to prune is
// ErrNotFound.
func PruneAudit(ctx context.Context, st PruneStore, signer crypto.Signer, cert *x509.Certificate, before time.Time, who Actor) (*registry.AuditCheckpoint, int64, error) {
	cp, err := st.PlanAuditPrune(ctx, before)
	if err != nil {
		return nil, 0, err
	}
	cp.Signer = cert.Raw
	alg, sig, err := pki.SignDetached(rand.Reader, signer, cp.SignedBytes())
	if err != nil {
		return nil, 0, err
	}
	cp.Algorithm, cp.Signature = alg.String(), sig
	for i := range cp.Tenants {
		if _, cp.Tenants[i].Signature, err = pki.SignDetached(rand.Reader, signer, cp.TenantSignedBytes(&cp.Tenants[i])); err != nil {
			return nil, 0, err
		}
	}
	if _, err := registry.VerifyCheckpoint(cp, nil, "*"); err != nil {
		return nil, 0, fmt.Errorf("the signing key does not match its certificate: %w", err)
	}
	n, err := st.PruneAudit(ctx, cp, event(who, "", ActionAuditPrune, fmt.Sprintf("seq<=%d", cp.Seq), registry.ResultOK,
		fmt.Sprintf("pruned %s; checkpoint signed by %s", before.UTC().Format(time.RFC3339), cert.Subject)))
	if err != nil {
		return nil, 0, err
	}
	return cp, n, nil
}

// VerifyAuditStore is what VerifyAudit needs. *sqlstore.Store has it.
type VerifyAuditStore interface {
	VerifyAudit(ctx context.Context) error
	GetAuditCheckpoint(ctx context.Context) (*registry.AuditCheckpoint, error)
}

// VerifyAudit checks the live chain (every event, from the newest prune
// checkpoint when there is one) and the checkpoint's signatures, whose
// signer must chain to root. It returns the checkpoint, nil when the log
// was never pruned.
func VerifyAudit(ctx context.Context, st VerifyAuditStore, root *x509.Certificate) (*registry.AuditCheckpoint, error) {
	cp, err := st.GetAuditCheckpoint(ctx)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		cp = nil
	case err != nil:
		return nil, err
	default:
		if _, err := registry.VerifyCheckpoint(cp, root, "*"); err != nil {
			return nil, fmt.Errorf("%w: checkpoint %d: %w", registry.ErrAuditChain, cp.ID, err)
		}
	}
	return cp, st.VerifyAudit(ctx)
}
