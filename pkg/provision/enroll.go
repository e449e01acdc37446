package provision

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/smallstep/go-attestation/attest"

	"devpki/pkg/pki"
	"devpki/pkg/registry"
)

// This file is the one enrollment pipeline. Every front door ends in
// Service.Enroll with the Attestor of its method; after admission the same
// steps run, in this order, for every method:
//
//	admit → CSR (key policy, serial, MACs) → canonical identity (bound
//	serial, tenant, tenant policy) → lost answer? resend it → decide (new
//	device, re-enrollment, conflict, clone suspect, revoked) → store
//	ready? → sign →
//	commit (device + certificate + spent token + audit, one transaction)
//	→ answer
//
// Everything that can be refused is refused before the signature. The TPM
// challenge (TPMChallenge, tpm.go) runs the same token admission, identity
// and decision before it issues a challenge.

// ErrDeviceRevoked: the serial is a device an admin revoked. It comes back
// only by an explicit admin action: 'ca devices reinstate ID', or a token
// minted for its serial with the reinstate flag (TokenSpec.Reinstate).
// Nothing is signed and the token is not spent.
var ErrDeviceRevoked = errors.New("provision: device revoked by an administrator")

// Attestor proves who is asking and yields an Admission. It decides nothing
// else (identity, conflicts and policy are the pipeline's), and must be
// cheap to refuse: it runs before any signing work.
type Attestor interface {
	Admit(ctx context.Context, req *Request) (*Admission, error)
}

// Attestors are the attestors of the enrollment doors, wired by cmd/ca; the
// API picks one per door. A nil attestor closes its door.
type Attestors struct {
	Token Attestor // POST /v1/enroll: a bootstrap token (TokenAttestor)
	TPM   Attestor // POST /v1/enroll/tpm: the answer to a TPM challenge (TPMAttestor)
	// IDevID admits a factory IDevID client certificate (IEEE 802.1AR) on
	// POST /v1/enroll without a token and on EST simpleenroll.
	IDevID Attestor
}

// Request is one enrollment request as a front door received it.
type Request struct {
	// Credential is the bootstrap token of the token method.
	Credential string
	// CSRPEM is the PEM certificate request.
	CSRPEM []byte
	// TPM is the answer to a TPM challenge (TPMAttestor); nil for other
	// methods.
	TPM *TPMAnswer
	// PeerCerts are the certificates the client presented in the TLS
	// handshake, leaf first, as sent and not verified (a factory IDevID
	// and whatever chain the device sent with it); the IDevID attestor
	// verifies them.
	PeerCerts []*x509.Certificate
	// SourceAddr is the client address, for the audit log.
	SourceAddr string
	// Tenant, when set, is the name of the tenant the request was addressed
	// to (an EST label, /.well-known/est/<tenant>/): an admission into
	// another tenant is refused before anything else (a token of another
	// tenant: registry.ErrTokenTenantMismatch; another credential:
	// ErrForbidden), spending and signing nothing. Empty: the admission's
	// tenant.
	Tenant string

	csr    *x509.CertificateRequest
	csrErr error
}

// TPMAnswer is a device's answer to a TPM challenge (TPMChallenge).
type TPMAnswer struct {
	ChallengeID     string
	ActivatedSecret []byte
	// Certify is the TPM2_Certify of the CSR's key by the activated AK,
	// over the challenge nonce.
	Certify attest.CertificationParameters
}

// CSR parses CSRPEM once (pki.ErrBadCSR when it is not a CSR).
func (r *Request) CSR() (*x509.CertificateRequest, error) {
	if r.csr == nil && r.csrErr == nil {
		r.csr, r.csrErr = pki.ParseCSRPEM(r.CSRPEM)
	}
	return r.csr, r.csrErr
}

// Admission is what an Attestor proved: who asks, in which tenant, with
// which credential and evidence. The zero value admits nothing.
type Admission struct {
	// Method is the enrollment method recorded on the device: "token",
	// MethodTPM, MethodIDevID.
	Method string
	// TenantID is the tenant the device joins.
	TenantID string
	// Actor is who asks, for the audit log.
	Actor Actor

	// TokenHash is the bootstrap token this enrollment spends, in its
	// commit; TokenID names it in the audit log. Empty: no token.
	TokenHash []byte
	TokenID   string
	// Replay: the token was already spent. It admits only the device whose
	// enrollment spent it, to be sent its answer again (and, for a TPM
	// attesting the same EK, to re-enroll without spending it again).
	Replay bool
	// Reinstate: the token lets a device an admin revoked re-enroll (only
	// for its BoundSerial).
	Reinstate bool

	// BoundSerial, when set, is the only serial this admission covers
	// (compared folded); BoundMACs, when not nil, the only MACs. BoundBy
	// says what bound them: "token" (a mismatch is
	// registry.ErrTokenSerialMismatch), "challenge" (a CSR contradicting
	// its own TPM challenge: pki.ErrBadCSR) or "idevid" (the IDevID's
	// serial: ErrIDevIDSerialMismatch).
	BoundSerial string
	BoundMACs   []string
	BoundBy     string

	// Evidence of a TPM: the EK hash, the activated AK (PKIX DER) and the
	// key it certified (which the CSR must carry).
	EKHash      string
	AKPub       []byte
	AttestedKey crypto.PublicKey

	// The factory IDevID that admitted the device (IDevIDAttestor): its
	// issuer DN and certificate serial (lowercase hex). Empty for other
	// methods. The hardware serial it carried is BoundSerial.
	IDevIDIssuer string
	IDevIDSerial string
}

// identity is the canonical identity an admitted request claims.
type identity struct {
	tenant *registry.Tenant
	serial string   // as presented; compared folded
	macs   []string // normalized
	pub    crypto.PublicKey
	spki   []byte // the DER SubjectPublicKeyInfo of pub
	// deviceID is the device the request is about once decide knows it.
	deviceID string
}

// plan is what decide chose for an identity.
type plan struct {
	existing  *registry.Device // nil: a new device
	reinstate bool             // existing was revoked; the admission reinstates it
}

// Enroll is the one path every front door (native JSON, TPM, and later EST
// and IDevID) ends in: a admits req, then the steps listed at the top of
// this file run. Refusals are audited (a clone suspect is held for an
// admin, registry.Quarantine). Errors wrap registry, pki, verify or this
// package's sentinels (api/errors.go maps each to a response).
func (s *Service) Enroll(ctx context.Context, a Attestor, req *Request) (*Result, error) {
	adm, err := a.Admit(ctx, req)
	if err != nil {
		err = s.refuseEnroll(ctx, req, nil, nil, err)
		s.cfg.Metrics.Enrollment(attestorMethod(a), Outcome(err))
		return nil, err
	}
	res, id, err := s.enroll(ctx, adm, req)
	if err != nil {
		err = s.refuseEnroll(ctx, req, adm, id, err)
	}
	method := adm.Method
	if method == "" {
		method = attestorMethod(a)
	}
	s.cfg.Metrics.Enrollment(method, Outcome(err))
	if err != nil {
		return nil, err
	}
	return res, nil
}

func (s *Service) enroll(ctx context.Context, adm *Admission, req *Request) (*Result, *identity, error) {
	// The tenant the request was addressed to, if any.
	if err := s.addressedTenant(ctx, adm, req.Tenant); err != nil {
		return nil, nil, err
	}

	// The CSR: key policy, serial, MACs.
	csr, err := req.CSR()
	if err != nil {
		return nil, nil, err
	}
	claims, err := s.cfg.Policy.Check(csr)
	if err != nil {
		return nil, nil, err
	}
	if adm.AttestedKey != nil && !keysEqual(adm.AttestedKey, claims.PublicKey) {
		return nil, nil, fmt.Errorf("%w: the CSR's key is not the key the TPM certified", pki.ErrBadCSR)
	}

	// Canonical identity: bound serial, tenant, tenant policy.
	id, err := s.identity(ctx, adm, claims.Serial, claims.MACs, claims.PublicKey)
	if err != nil {
		return nil, id, err
	}
	id.pub, id.spki = claims.PublicKey, csr.RawSubjectPublicKeyInfo

	// A spent token: the answer to its own enrollment was lost.
	if adm.Replay {
		res, err := s.resend(ctx, adm, id)
		if res != nil || err != nil {
			return res, id, err
		}
		// The same TPM attests again: it re-enrolls, spending nothing.
		adm.TokenHash = nil
	}

	// New device, re-enrollment, or refusal — before any signature.
	p, err := s.decide(ctx, adm, id)
	if err != nil {
		return nil, id, err
	}

	// A store known to be unable to commit: refuse now, not after signing.
	if err := s.ready(ctx); err != nil {
		return nil, id, err
	}

	// Sign.
	now := s.cfg.Now()
	dev := &registry.Device{
		ID: s.cfg.NewDeviceID(), TenantID: id.tenant.ID, Serial: id.serial, MACs: id.macs, Status: registry.DeviceActive,
		Method: adm.Method, EKHash: adm.EKHash, AKPub: adm.AKPub, CreatedAt: now, UpdatedAt: now,
		IDevIDIssuer: adm.IDevIDIssuer, IDevIDSerial: adm.IDevIDSerial,
	}
	if p.existing != nil {
		dev.ID, dev.CreatedAt = p.existing.ID, p.existing.CreatedAt
		if adm.IDevIDIssuer == "" {
			// A token bound to the serial re-enrolls the device; it keeps
			// the IDevID it was bound to (decide let only that one in).
			dev.IDevIDIssuer, dev.IDevIDSerial = p.existing.IDevIDIssuer, p.existing.IDevIDSerial
		}
	}
	id.deviceID = dev.ID
	issued, err := s.cfg.Issuer.IssueDevice(ctx, &pki.DeviceRequest{
		Identity: pki.Identity{
			DeviceID: dev.ID, Tenant: id.tenant.Name, Serial: id.serial, MACs: id.macs,
			TrustDomain: s.cfg.TrustDomain, EKHash: adm.EKHash,
		},
		PublicKey: claims.PublicKey,
		Lifetime:  s.certLifetime(id.tenant),
		Profile:   s.cfg.Profile,
	})
	if err != nil {
		return nil, id, fmt.Errorf("sign certificate for %q: %w", id.serial, err)
	}

	// Commit: device, certificate, spent token and audit in one transaction.
	cert := issued.Certificate
	rec := CertificateRecord(cert, registry.KindDevice, id.tenant.ID, dev.ID, now)
	action, detail := ActionEnroll, fmt.Sprintf("method=%s serial=%s", adm.Method, id.serial)
	if adm.EKHash != "" {
		detail += " ek=" + adm.EKHash
	}
	if adm.IDevIDIssuer != "" {
		detail += " idevid=" + IDevIDName(adm.IDevIDIssuer, adm.IDevIDSerial)
	}
	detail += " cert=" + rec.Serial
	if adm.TokenID != "" {
		detail += " token=" + adm.TokenID
	}
	if p.reinstate {
		action, detail = ActionDeviceReinstate, detail+" reinstated: the revoked device re-enrolled with a reinstate token"
	}
	err = s.cfg.Store.Enroll(ctx, &registry.Enrollment{
		TokenHash:   adm.TokenHash,
		Device:      dev,
		Replace:     p.existing,
		Certificate: rec,
		Audit:       event(adm.Actor, id.tenant.ID, action, dev.ID, registry.ResultOK, detail),
	})
	if err != nil {
		return nil, id, s.lostRace(adm, id, fmt.Errorf("record enrollment of %q: %w", id.serial, err))
	}
	return &Result{DeviceID: dev.ID, Certificate: cert, Chain: issued.Chain, RenewAfter: RenewAfter(cert)}, id, nil
}

// addressedTenant refuses an admission into another tenant than name, the
// tenant the request was addressed to (Request.Tenant); an empty name
// addresses none. An unknown name is registry.ErrNotFound.
func (s *Service) addressedTenant(ctx context.Context, adm *Admission, name string) error {
	if name == "" {
		return nil
	}
	t, err := s.cfg.Store.GetTenant(ctx, name)
	if err != nil {
		return fmt.Errorf("tenant %q: %w", name, err)
	}
	switch {
	case t.ID == adm.TenantID:
		return nil
	case adm.TokenHash != nil:
		return fmt.Errorf("the request was sent to tenant %q: %w", name, registry.ErrTokenTenantMismatch)
	}
	return fmt.Errorf("%w: the credential admits into tenant %s, the request was sent to tenant %q", ErrForbidden, adm.TenantID, name)
}

// identity checks the serial and MACs an admission claims against its
// binding (the one bound-serial rule), then the tenant's policy (method,
// require_tpm, and the key type when pub is not nil: tenantAdmits), and
// returns the canonical identity in the admitted tenant.
func (s *Service) identity(ctx context.Context, adm *Admission, serial string, macs []string, pub crypto.PublicKey) (*identity, error) {
	id := &identity{serial: serial, macs: macs}
	if adm.BoundSerial != "" && !registry.SameSerial(adm.BoundSerial, serial) {
		switch adm.BoundBy {
		case "challenge":
			return id, fmt.Errorf("%w: the CSR names serial %q, the challenge %q", pki.ErrBadCSR, serial, adm.BoundSerial)
		case "idevid":
			return id, fmt.Errorf("%w: the CSR names serial %q, the IDevID %s carries serial %q", ErrIDevIDSerialMismatch,
				serial, IDevIDName(adm.IDevIDIssuer, adm.IDevIDSerial), adm.BoundSerial)
		}
		return id, fmt.Errorf("the %s is bound to serial %q, the request names %q: %w",
			adm.BoundBy, adm.BoundSerial, serial, registry.ErrTokenSerialMismatch)
	}
	if adm.BoundMACs != nil && !sameMACs(adm.BoundMACs, macs) {
		return id, fmt.Errorf("%w: the CSR names MACs %v, the %s %v", pki.ErrBadCSR, macs, adm.BoundBy, adm.BoundMACs)
	}
	tenant, err := s.tenant(ctx, adm.TenantID)
	if err != nil {
		return id, err
	}
	id.tenant = tenant
	if err := tenantAdmits(tenant, adm.Method, pub); err != nil {
		return id, err
	}
	if err := s.cfg.TenantLimit.Allow(tenant.ID, tenant.Name, s.cfg.Now()); err != nil {
		return id, err
	}
	return id, nil
}

// decide is the one place that tells, from the registry, what an admitted
// identity is: a new device, the re-enrollment of an enrolled one, or a
// refusal. The serial (folded) enrolled already may be re-enrolled by the
// same TPM (its EK decides; a token never overrides it) or, without a TPM,
// by a token bound to that serial, or by the IDevID it enrolled with;
// otherwise it is a serial conflict, or a clone suspect when a TPM claims
// it with another EK or an IDevID other than the one it enrolled with (a
// serial enrolled without an IDevID, by token or TPM, included: an
// admin releases the claim to bind the device to that IDevID). A revoked device
// comes back only with a reinstating admission (ErrDeviceRevoked). An EK
// or a MAC that belongs to another device is a clone suspect.
func (s *Service) decide(ctx context.Context, adm *Admission, id *identity) (*plan, error) {
	p := &plan{}
	// One read: the device with this serial, and the active devices that
	// hold any of the claimed MACs.
	holders, err := s.cfg.Store.IdentityHolders(ctx, id.tenant.ID, id.serial, id.macs)
	if err != nil {
		return nil, fmt.Errorf("look up the devices holding serial %q or MACs %v: %w", id.serial, id.macs, err)
	}
	var existing *registry.Device
	for _, d := range holders {
		if registry.SameSerial(d.Serial, id.serial) {
			existing = d
		}
	}
	if existing != nil {
		id.deviceID = existing.ID
		switch {
		case adm.EKHash != "" && existing.EKHash != adm.EKHash:
			return nil, &cloneClaim{reason: registry.ReasonSerialOtherEK, serial: id.serial, macs: id.macs, ekHash: adm.EKHash,
				device: existing.ID, deviceTenant: existing.TenantID, deviceEK: existing.EKHash,
				msg: fmt.Sprintf("serial %q is enrolled as device %s with EK %q, this claim has EK %s",
					id.serial, existing.ID, existing.EKHash, adm.EKHash)}
		case adm.IDevIDIssuer != "" && (existing.IDevIDIssuer != adm.IDevIDIssuer || existing.IDevIDSerial != adm.IDevIDSerial):
			enrolled := "without an IDevID (method " + existing.Method + ")"
			if existing.IDevIDIssuer != "" {
				enrolled = "with IDevID " + IDevIDName(existing.IDevIDIssuer, existing.IDevIDSerial)
			}
			return nil, &cloneClaim{reason: registry.ReasonSerialOtherIDevID, serial: id.serial, macs: id.macs,
				idevidIssuer: adm.IDevIDIssuer, idevidSerial: adm.IDevIDSerial,
				device: existing.ID, deviceTenant: existing.TenantID, deviceEK: existing.EKHash,
				deviceIDevIDIssuer: existing.IDevIDIssuer, deviceIDevIDSerial: existing.IDevIDSerial,
				msg: fmt.Sprintf("serial %q is enrolled as device %s %s, this claim has IDevID %s",
					id.serial, existing.ID, enrolled, IDevIDName(adm.IDevIDIssuer, adm.IDevIDSerial))}
		case adm.EKHash == "" && adm.BoundSerial == "":
			// The answer does not name the enrolled device (the audit
			// event does, as its target): a token must not be a probe of
			// which serials exist and what their ids are.
			return nil, fmt.Errorf("serial %q is already enrolled; only a token bound to it re-enrolls it: %w",
				id.serial, registry.ErrSerialConflict)
		}
		switch existing.Status {
		case registry.DeviceActive:
		case registry.DeviceRevoked:
			if !adm.Reinstate {
				return nil, fmt.Errorf("device %s (serial %q) was revoked; an administrator must reinstate it "+
					"('ca devices reinstate' or a token minted with --reinstate): %w", existing.ID, existing.Serial, ErrDeviceRevoked)
			}
			p.reinstate = true
		default:
			return nil, fmt.Errorf("device %s (serial %q) is %s: %w", existing.ID, existing.Serial, existing.Status, registry.ErrDeviceNotActive)
		}
		p.existing = existing
	}
	if adm.EKHash != "" {
		bound, err := s.cfg.Store.ListDevices(ctx, registry.DeviceFilter{EKHash: adm.EKHash, Limit: 10})
		if err != nil {
			return nil, fmt.Errorf("look up devices of EK %s: %w", adm.EKHash, err)
		}
		for _, d := range bound {
			if existing == nil || d.ID != existing.ID {
				return nil, &cloneClaim{reason: registry.ReasonEKOtherSerial, serial: id.serial, macs: id.macs, ekHash: adm.EKHash,
					device: d.ID, deviceTenant: d.TenantID, deviceEK: d.EKHash,
					msg: fmt.Sprintf("EK %s is enrolled as device %s (serial %q), this claim has serial %q", adm.EKHash, d.ID, d.Serial, id.serial)}
			}
		}
	}
	for _, d := range holders {
		if d.Status != registry.DeviceActive || !sharesMAC(d.MACs, id.macs) {
			continue
		}
		if existing == nil || d.ID != existing.ID {
			return nil, &cloneClaim{reason: registry.ReasonMACOtherSerial, serial: id.serial, macs: id.macs, ekHash: adm.EKHash,
				device: d.ID, deviceTenant: d.TenantID, deviceEK: d.EKHash,
				msg: fmt.Sprintf("MAC %s belongs to device %s (serial %q), this claim has serial %q",
					sharedMAC(d.MACs, id.macs), d.ID, d.Serial, id.serial)}
		}
	}
	return p, nil
}

// sharesMAC reports whether held and claimed have a MAC in common.
func sharesMAC(held, claimed []string) bool { return sharedMAC(held, claimed) != "" }

// sharedMAC is the first MAC of claimed that held also lists.
func sharedMAC(held, claimed []string) string {
	for _, m := range claimed {
		if slices.Contains(held, m) {
			return m
		}
	}
	return ""
}

// lostRace turns the store's refusal of an enrollment that decide had let
// through — another enrollment committed first — into what decide would
// now say: a clone suspect for an EK or MAC taken, or for a serial a TPM
// claims; any other error as it is.
func (s *Service) lostRace(adm *Admission, id *identity, err error) error {
	reason := registry.QuarantineReason("")
	switch {
	case errors.Is(err, registry.ErrEKConflict):
		reason = registry.ReasonEKOtherSerial
	case errors.Is(err, registry.ErrMACConflict):
		reason = registry.ReasonMACOtherSerial
	case errors.Is(err, registry.ErrSerialConflict) && adm.EKHash != "":
		reason = registry.ReasonSerialOtherEK
	case errors.Is(err, registry.ErrSerialConflict) && adm.IDevIDIssuer != "":
		reason = registry.ReasonSerialOtherIDevID
	default:
		return err
	}
	return &cloneClaim{reason: reason, serial: id.serial, macs: id.macs, ekHash: adm.EKHash,
		idevidIssuer: adm.IDevIDIssuer, idevidSerial: adm.IDevIDSerial,
		msg: fmt.Sprintf("serial %q EK %q: %v", id.serial, adm.EKHash, err)}
}

// replayed is the device whose enrollment spent the token of adm: the
// serial enrolled in the tenant (with adm's EK, for a TPM) with one of its
// certificates recorded with that token. Anyone else is refused as the
// token is: spent.
func (s *Service) replayed(ctx context.Context, adm *Admission, tenantID, serial string) (*registry.Device, []*registry.Certificate, error) {
	spent := func(why string, args ...any) error {
		return fmt.Errorf("bootstrap token %s: %w (%s)", adm.TokenID, registry.ErrTokenSpent, fmt.Sprintf(why, args...))
	}
	dev, err := s.cfg.Store.GetDeviceBySerial(ctx, tenantID, serial)
	if err != nil {
		return nil, nil, spent("serial %q is not enrolled with it", serial)
	}
	if adm.EKHash != "" && dev.EKHash != adm.EKHash {
		return nil, nil, spent("serial %q was enrolled with another EK", serial)
	}
	certs, err := s.cfg.Store.ListDeviceCertificates(ctx, dev.ID)
	if err != nil {
		return nil, nil, fmt.Errorf("read certificates of %s: %w", dev.ID, err)
	}
	for _, c := range certs {
		if bytes.Equal(c.TokenHash, adm.TokenHash) {
			return dev, certs, nil
		}
	}
	return nil, nil, spent("device %s was not enrolled with it", dev.ID)
}

// resend is the one "resend a lost answer" path of every method. A device
// whose answer was lost (power cut, dropped link after the commit) asks
// again with its spent token: the active certificate recorded with that
// token for the same key is sent again, unsigned anew. A TPM of the
// device attesting again with a new key gets (nil, nil): the pipeline
// re-enrolls it as a reset of the same TPM, spending nothing.
func (s *Service) resend(ctx context.Context, adm *Admission, id *identity) (*Result, error) {
	dev, certs, err := s.replayed(ctx, adm, id.tenant.ID, id.serial)
	if err != nil {
		return nil, err
	}
	id.deviceID = dev.ID
	keyHash := KeyHash(id.spki)
	for i := len(certs) - 1; i >= 0; i-- {
		r := certs[i]
		if r.Kind != registry.KindDevice || r.Status != registry.CertActive || !bytes.Equal(r.TokenHash, adm.TokenHash) ||
			!bytes.Equal(r.KeySHA256, keyHash) {
			continue
		}
		c, err := x509.ParseCertificate(r.DER)
		if err != nil {
			return nil, fmt.Errorf("read certificate %s: %w", r.Serial, err)
		}
		_ = s.cfg.Store.AppendAudit(context.WithoutCancel(ctx), event(adm.Actor, id.tenant.ID, ActionEnrollReplay, dev.ID,
			registry.ResultOK, "cert="+r.Serial+" sent again to the same key and token"))
		return &Result{DeviceID: dev.ID, Certificate: c, Chain: s.chain(), RenewAfter: RenewAfter(c)}, nil
	}
	if adm.EKHash != "" {
		return nil, nil
	}
	return nil, fmt.Errorf("bootstrap token %s: %w (no active certificate of device %s holds this key)",
		adm.TokenID, registry.ErrTokenSpent, dev.ID)
}

// refuseEnroll audits a refused enrollment (or holds a clone suspect for an
// admin) and returns the error for the device.
func (s *Service) refuseEnroll(ctx context.Context, req *Request, adm *Admission, id *identity, cause error) error {
	who, tenantID, action, target := Actor{Kind: ActorAnonymous, Source: req.SourceAddr}, "", ActionEnroll, ""
	if req.TPM != nil {
		action, target = ActionEnrollTPM, "challenge:"+req.TPM.ChallengeID
	}
	if adm != nil {
		who, tenantID, cause = adm.Actor, adm.TenantID, namingToken(adm, cause)
		if adm.BoundSerial != "" {
			target = adm.BoundSerial
		}
	}
	if id != nil {
		if target = id.serial; id.deviceID != "" {
			target = id.deviceID
		}
	}
	return s.refuse(ctx, who, tenantID, action, target, cause)
}

// namingToken names the bootstrap token of adm in a refusal, for the audit
// log and the device, unless the refusal already does.
func namingToken(adm *Admission, err error) error {
	if adm.TokenID == "" || strings.Contains(err.Error(), adm.TokenID) {
		return err
	}
	return fmt.Errorf("bootstrap token %s: %w", adm.TokenID, err)
}

// refuse audits a refusal by who in tenantID and returns cause for the
// device; a clone suspect (ErrCloneSuspect) is instead held for an admin
// (holdClone), and the device is told so.
func (s *Service) refuse(ctx context.Context, who Actor, tenantID string, action Action, target string, cause error) error {
	if held := s.holdClone(ctx, who, tenantID, cause); held != nil {
		return held
	}
	_ = appendRefusal(ctx, s.cfg.Store, who, tenantID, action, target, cause)
	return cause
}

// TokenStore is what a token admission reads. registry.Store has it.
type TokenStore interface {
	GetToken(ctx context.Context, hash []byte) (*registry.Token, error)
}

// admitToken is the one token admission: the token presented must be
// well-formed, known and spendable at now (registry.Token.Spendable). A
// token refused only for being spent admits a replay (Admission.Replay).
func admitToken(ctx context.Context, st TokenStore, now func() time.Time, credential, source string) (*Admission, error) {
	tok := strings.TrimSpace(credential)
	if tok == "" {
		return nil, fmt.Errorf("no bootstrap token presented: %w", registry.ErrTokenInvalid)
	}
	if !strings.HasPrefix(tok, TokenPrefix) || len(tok) > 128 {
		return nil, fmt.Errorf("malformed bootstrap token: %w", registry.ErrTokenInvalid)
	}
	t, err := st.GetToken(ctx, HashToken(tok))
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return nil, fmt.Errorf("unknown bootstrap token: %w", registry.ErrTokenInvalid)
	case err != nil:
		return nil, fmt.Errorf("look up bootstrap token: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	replay := false
	if err := t.Spendable(now()); err != nil {
		if !errors.Is(err, registry.ErrTokenSpent) {
			return nil, err
		}
		replay = true
	}
	return &Admission{
		Method:      MethodToken,
		TenantID:    t.TenantID,
		Actor:       Actor{Kind: ActorToken, ID: t.ID, TenantID: t.TenantID, Source: source},
		TokenHash:   t.Hash,
		TokenID:     t.ID,
		Replay:      replay,
		Reinstate:   t.Reinstate && t.Serial != "",
		BoundSerial: t.Serial,
		BoundBy:     "token",
	}, nil
}
