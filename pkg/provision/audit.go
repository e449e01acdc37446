package provision

import (
	"context"
	"errors"

	"devpki/pkg/pki"
	"devpki/pkg/registry"
	"devpki/pkg/tpm/verify"
)

// ActorKind says what kind of principal acted.
type ActorKind string

// Actor kinds. An audit event's Actor is "<kind>" or "<kind>:<id>".
const (
	ActorAnonymous ActorKind = "anonymous" // nothing authenticated yet
	ActorToken     ActorKind = "token"     // a bootstrap token, by its id
	ActorTPM       ActorKind = "tpm"       // a TPM attested by its EK, by its EK hash
	ActorIDevID    ActorKind = "idevid"    // a factory IDevID, by IDevIDName (certificate serial @ issuer DN)
	ActorDevice    ActorKind = "device"    // an enrolled device, by its id (its certificate over mTLS)
	ActorCert      ActorKind = "cert"      // a client certificate the CA does not map to anyone, by its serial
	ActorAdmin     ActorKind = "admin"     // an admin, by name
	ActorSystem    ActorKind = "system"    // the CA itself, by task ("init", "rotate", "dev")
	ActorLocal     ActorKind = "local"     // a local command on the CA host, by OS user
)

// Actor is who asks for a state change: for tenant scope and for the audit
// log. The zero value is an anonymous caller from an unknown address.
type Actor struct {
	Kind ActorKind
	// ID names the actor within its kind (token id, EK hash, device id,
	// admin name, certificate serial, system task); empty for anonymous.
	ID string
	// TenantID is the tenant the actor acts in: an admin's tenant, a
	// token's, a device's. It bounds what the actor may see and change.
	TenantID string
	// Super: the actor is a super-admin, acting on every tenant (InScope).
	Super bool
	// Source is the client address, for the audit log.
	Source string
}

// String is the actor as the audit log records it: "admin:alice",
// "token:<id>", "anonymous".
func (a Actor) String() string {
	if a.Kind == "" {
		return string(ActorAnonymous)
	}
	if a.ID == "" {
		return string(a.Kind)
	}
	return string(a.Kind) + ":" + a.ID
}

// Anonymous reports whether a is nobody authenticated: no credential, an
// unknown or malformed token, a certificate of no issuer the CA knows, a
// TPM challenge answer that names no known challenge. Its refusals are
// counted in the bounded refusal log (registry.Refusal), not chained one
// event each, so that a flood of them cannot bury the audit chain. Every
// other actor — a token that exists (spent, mismatched), a certificate
// the CA issued, an attested TPM, an admin — is authenticated, and its
// refusals are chained events.
func (a Actor) Anonymous() bool { return a.Kind == "" || a.Kind == ActorAnonymous }

// AdminActor is the actor of an admin's request.
func AdminActor(name, tenantID, source string) Actor {
	return Actor{Kind: ActorAdmin, ID: name, TenantID: tenantID, Source: source}
}

// SystemActor is the CA acting on its own (task names the job: "rotate",
// "init", "dev").
func SystemActor(task, tenantID string) Actor {
	return Actor{Kind: ActorSystem, ID: task, TenantID: tenantID}
}

// Action names a kind of audited event. Every audit event provision writes
// uses one of these; `ca audit list` shows them as they are.
type Action string

// Actions.
const (
	ActionEnroll             Action = "enroll"               // a device enrolled (or re-enrolled)
	ActionEnrollReplay       Action = "enroll.replay"        // a lost enrollment answer was sent again
	ActionEnrollTPMChallenge Action = "enroll.tpm.challenge" // a TPM challenge was issued or refused
	ActionEnrollTPM          Action = "enroll.tpm"           // a TPM challenge answer was refused
	ActionCloneSuspect       Action = "enroll.clone-suspect" // a claim was held for an admin as a possible clone
	ActionRenew              Action = "renew"                // a device renewed with the same key
	ActionRekey              Action = "rekey"                // a device renewed with a new key
	// ActionRenewExpired: a device renewed an expired certificate by proof
	// of possession of its key (renew_expired.go), or was refused.
	ActionRenewExpired          Action = "renew-expired"
	ActionRenewExpiredChallenge Action = "renew-expired.challenge" // a renewal challenge was refused
	ActionTokenCreate           Action = "token.create"
	ActionTenantCreate          Action = "tenant.create"
	ActionTenantUpdate          Action = "tenant.update"
	ActionCertIssue             Action = "cert.issue" // a component, admin or OCSP certificate
	ActionCertRevoke            Action = "cert.revoke"
	ActionDeviceRevoke          Action = "device.revoke"
	ActionDeviceReinstate       Action = "device.reinstate"
	ActionDeviceRotate          Action = "device.rotate"
	ActionRotateDeadline        Action = "device.rotate.deadline"
	ActionTPMRootAdd            Action = "tpm.root.add"
	ActionTPMPreregister        Action = "tpm.preregister"
	ActionIDevIDCAAdd           Action = "idevid.ca.add" // a manufacturer IDevID root or intermediate trusted in a tenant
	ActionQuarantineDismiss     Action = "quarantine.dismiss"
	ActionQuarantineRelease     Action = "quarantine.release"
	ActionAdminRead             Action = "admin.read" // an admin read (GET) of the admin API
	ActionAdminDenied           Action = "admin.denied"
	ActionAdminPut              Action = "admin.put"
	ActionAuditPrune            Action = "audit.prune"  // audit events before a signed checkpoint were deleted
	ActionRequest               Action = "request"      // a request refused before it reached a door (an oversized body)
	ActionAdminCreate           Action = "admin.create" // an admin made through the admin API
	ActionAdminRevoke           Action = "admin.revoke"
	ActionAdminRenew            Action = "admin.renew" // an admin certificate renewed over mTLS
)

// event builds the audit event of an action by who on target.
func event(who Actor, tenantID string, action Action, target, result, detail string) *registry.AuditEvent {
	if tenantID == "" {
		tenantID = who.TenantID
	}
	return &registry.AuditEvent{
		TenantID: tenantID, Actor: who.String(), Action: string(action), Target: target,
		Result: result, Detail: detail, SourceAddr: who.Source,
	}
}

// auditAppender appends a single audit event, or counts an anonymous
// refusal (refusals).
type auditAppender interface {
	AppendAudit(ctx context.Context, ev *registry.AuditEvent) error
	RecordRefusal(ctx context.Context, r *registry.Refusal) error
}

// appendRefusal audits a refused request: a chained event when who is
// authenticated, a count in the bounded refusal log when who is anonymous
// (Actor.Anonymous), keyed by source, door (action), reason class
// (ReasonClass) and tenant, with the first refusal's target and cause as
// its sample. The refusal is the answer whatever happens here, so a
// failure to append is returned only for the caller to log.
func appendRefusal(ctx context.Context, st auditAppender, who Actor, tenantID string, action Action, target string, cause error) error {
	ctx = context.WithoutCancel(ctx)
	if who.Anonymous() {
		sample := cause.Error()
		if target != "" {
			sample = target + ": " + sample
		}
		return st.RecordRefusal(ctx, &registry.Refusal{SourceAddr: who.Source, Action: string(action),
			Reason: ReasonClass(cause), TenantID: tenantID, Sample: sample})
	}
	return st.AppendAudit(ctx, event(who, tenantID, action, target, registry.ResultDenied, cause.Error()))
}

// ReasonClass names the kind of a refusal for the refusal log: a short
// stable word ("token-invalid", "unauthenticated", "bad-csr", ...). An
// error may name its own class with a ReasonClass() string method (the
// API's request errors do); anything else is "refused".
func ReasonClass(err error) string {
	var rc interface{ ReasonClass() string }
	if errors.As(err, &rc) {
		return rc.ReasonClass()
	}
	for _, c := range reasonClasses {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	return "refused"
}

// reasonClasses in the order ReasonClass tries them.
var reasonClasses = []struct {
	err  error
	name string
}{
	{registry.ErrTokenInvalid, "token-invalid"},
	{registry.ErrTokenExpired, "token-expired"},
	{registry.ErrTokenSpent, "token-spent"},
	{registry.ErrTokenSerialMismatch, "token-mismatch"},
	{registry.ErrTokenTenantMismatch, "token-mismatch"},
	{ErrUnauthenticated, "unauthenticated"},
	{ErrForbidden, "forbidden"},
	{ErrTPMDisabled, "tpm-disabled"},
	{verify.ErrEKUntrusted, "tpm-untrusted-ek"},
	{verify.ErrAKInvalid, "tpm-invalid-ak"},
	{verify.ErrChallengeNotFound, "challenge-unknown"},
	{verify.ErrChallengeExpired, "challenge-expired"},
	{verify.ErrChallengeUsed, "challenge-used"},
	{pki.ErrBadSerial, "bad-serial"},
	{pki.ErrBadMAC, "bad-mac"},
	{pki.ErrBadCSR, "bad-csr"},
	{ErrInvalidArgument, "bad-request"},
	{ErrRenewGraceExpired, "renew-grace-expired"},
	{ErrExpiredProof, "renew-proof-invalid"},
	{registry.ErrUnavailable, "store-unavailable"},
}
