package provision

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/smallstep/go-attestation/attest"

	"devpki/pkg/pki"
	"devpki/pkg/registry"
	"devpki/pkg/tpm/verify"
)

// MethodTPM is the enrollment method of TPM attestation.
const MethodTPM = "tpm"

// Errors of TPM enrollment. The verify package's sentinels (ErrEKUntrusted,
// ErrAKInvalid, ErrActivation, ErrCertify, ErrCSR, ErrChallenge*) pass
// through wrapped.
var (
	// ErrTPMDisabled: the CA has no TPM configuration.
	ErrTPMDisabled = errors.New("provision: TPM attestation enrollment is not enabled")
	// ErrCloneSuspect: the serial is enrolled with another EK, or the EK is
	// enrolled with another serial. The claim is refused and audited for an
	// admin; no certificate is issued.
	ErrCloneSuspect = errors.New("provision: clone suspect")
)

// TPMConfig enables TPM attestation enrollment (Config.TPM).
type TPMConfig struct {
	// EKRoots are the TPM manufacturer roots EK certificates must chain to;
	// EKIntermediates may help build the chain.
	EKRoots, EKIntermediates *x509.CertPool
	// Challenger runs the credential-activation round. Required.
	Challenger *verify.Challenger
	// Tenant is the name of the tenant TPM-attested devices join when they
	// present no bootstrap token (with one they join the token's tenant);
	// empty means registry.DefaultTenant.
	Tenant string
}

// TPMChallengeRequest is the device's first message.
type TPMChallengeRequest struct {
	// EKCertDER is the EK certificate as read from the TPM (TCG header and
	// padding tolerated).
	EKCertDER []byte
	// EKPubDER is a bare EK public key (PKIX DER), for TPMs without an EK
	// certificate. Its EK hash must have been pre-registered by an operator
	// (registry.Preregistration) for this serial (and these MACs, when the
	// pre-registration names any); the device then joins the
	// pre-registration's tenant.
	EKPubDER []byte
	// AK is the AK public area, creation data, attestation and signature.
	AK attest.AttestationParameters
	// Serial and MACs are what the device will claim in its CSR.
	Serial string
	MACs   []string
	// Token, when not empty, is a bootstrap token the device presents with
	// its evidence. It must be live (as for Enroll), the device joins its
	// tenant, a serial-bound token must name Serial, and a bare EK must be
	// pre-registered in that tenant; TPMEnroll spends it. Empty means no
	// token: the device joins TPMConfig.Tenant or its pre-registration's.
	Token string
	// SourceAddr is the client address, for the audit log.
	SourceAddr string
}

// TPMChallenge is the answer to a TPMChallengeRequest.
type TPMChallenge struct {
	ID         string
	Credential attest.EncryptedCredential
	Nonce      []byte
	Expires    time.Time
}

// TPMEnrollRequest is the device's second message.
type TPMEnrollRequest struct {
	ChallengeID     string
	ActivatedSecret []byte
	Certify         attest.CertificationParameters
	CSRPEM          []byte
	SourceAddr      string
}

// tpmBinding is what the device claimed in its challenge request, kept with
// the pending challenge (verify.ChallengeRequest.Binding).
type tpmBinding struct {
	TenantID string   `json:"tenant_id"`
	Serial   string   `json:"serial"`
	MACs     []string `json:"macs"`
	// TokenHash and TokenID are the bootstrap token presented with the
	// challenge request, if any: TPMEnroll spends it.
	TokenHash []byte `json:"token_hash,omitempty"`
	TokenID   string `json:"token_id,omitempty"`
}

// TPMChallenge checks the device's EK and AK and returns a
// credential-activation challenge. The EK must come with a certificate that
// chains to the configured manufacturer roots (the key challenged is the
// verified certificate's), or be a bare key pre-registered for the serial. The serial and MACs are checked now and bound to
// the challenge; TPMEnroll requires the CSR to name the same. A bootstrap
// token (req.Token) is checked now, chooses the tenant and is bound to the
// challenge; TPMEnroll spends it. Refusals are audited.
func (s *Service) TPMChallenge(ctx context.Context, req *TPMChallengeRequest) (*TPMChallenge, error) {
	ch, tenantID, err := s.tpmChallenge(ctx, req)
	if err != nil {
		return nil, s.refuseTPM(ctx, req.SourceAddr, tenantID, "enroll.tpm.challenge", req.Serial, err)
	}
	return ch, nil
}

func (s *Service) tpmChallenge(ctx context.Context, req *TPMChallengeRequest) (_ *TPMChallenge, _ string, err error) {
	cfg := s.cfg.TPM
	if cfg == nil || cfg.Challenger == nil {
		return nil, "", ErrTPMDisabled
	}
	if err := pki.ValidateSerial(req.Serial); err != nil {
		return nil, "", fmt.Errorf("%w: serial: %w", ErrInvalidArgument, err)
	}
	macs := make([]string, 0, len(req.MACs))
	for _, m := range req.MACs {
		n, err := pki.NormalizeMAC(m)
		if err != nil {
			return nil, "", fmt.Errorf("%w: %w", ErrInvalidArgument, err)
		}
		macs = append(macs, n)
	}
	var tok *Admission // the bootstrap token, if one was presented
	var tenant *registry.Tenant
	var spent error // the token was spent: admitted only as the replay of its own enrollment
	if req.Token != "" {
		if tok, err = (TokenAttestor{Store: s.cfg.Store, Now: s.cfg.Now}).Admit(ctx, &Request{Credential: req.Token}); err != nil {
			if tok, spent = s.spentTokenAdmission(ctx, req.Token, err); tok == nil {
				return nil, "", err
			}
		}
		// Name the token in every later refusal (and so in its audit event).
		defer func() {
			if err != nil {
				err = fmt.Errorf("bootstrap token %s: %w", tokenID(tok), err)
			}
		}()
		if tok.BoundSerial != "" && tok.BoundSerial != req.Serial {
			return nil, tok.TenantID, fmt.Errorf("token is bound to serial %q, the device claims %q: %w",
				tok.BoundSerial, req.Serial, registry.ErrTokenSerialMismatch)
		}
		tenant, err = s.tenant(ctx, tok.TenantID)
	} else {
		tenant, err = s.tpmTenant(ctx)
	}
	if err != nil {
		return nil, "", err
	}
	var ekPub crypto.PublicKey
	switch {
	case len(req.EKCertDER) > 0 && len(req.EKPubDER) > 0:
		return nil, tenant.ID, fmt.Errorf("%w: send an EK certificate or an EK public key, not both", ErrInvalidArgument)
	case len(req.EKCertDER) > 0:
		ekCert, err := verify.ParseEKCertificate(req.EKCertDER)
		if err != nil {
			return nil, tenant.ID, err
		}
		roots, err := s.ekRoots(ctx, cfg)
		if err != nil {
			return nil, tenant.ID, err
		}
		if err := verify.VerifyEKCertificate(ekCert, roots, cfg.EKIntermediates, s.cfg.Now()); err != nil {
			return nil, tenant.ID, err
		}
		ekPub = ekCert.PublicKey
	case len(req.EKPubDER) > 0:
		pub, err := x509.ParsePKIXPublicKey(req.EKPubDER)
		if err != nil {
			return nil, tenant.ID, fmt.Errorf("%w: parse EK public key: %w", verify.ErrEKUntrusted, err)
		}
		pt, err := s.preregistered(ctx, pub, req.Serial, macs)
		if err != nil {
			return nil, tenant.ID, err
		}
		if tok != nil && pt.ID != tenant.ID {
			return nil, tenant.ID, fmt.Errorf("the EK is pre-registered in tenant %q, the token is for tenant %q: %w",
				pt.Name, tenant.Name, registry.ErrTokenTenantMismatch)
		}
		tenant, ekPub = pt, pub
	default:
		return nil, tenant.ID, fmt.Errorf("%w: no EK certificate or EK public key", verify.ErrEKUntrusted)
	}
	ekHash, err := verify.EKHash(ekPub)
	if err != nil {
		return nil, tenant.ID, fmt.Errorf("%w: %w", verify.ErrEKUntrusted, err)
	}
	if spent != nil {
		if err := s.replayOfToken(ctx, tenant.ID, req.Serial, ekHash, tok.TokenHash); err != nil {
			return nil, tenant.ID, fmt.Errorf("%w (%v)", spent, err)
		}
		// The token is not spent again: the same-EK rule admits the device.
		tok = &Admission{TenantID: tok.TenantID, Actor: tok.Actor, BoundSerial: tok.BoundSerial}
	}
	// Refuse a clone before the TPM work; TPMEnroll checks again.
	if _, err := s.checkClone(ctx, tenant.ID, req.Serial, ekHash); err != nil {
		return nil, tenant.ID, withMACs(err, macs)
	}
	b := tpmBinding{TenantID: tenant.ID, Serial: req.Serial, MACs: macs}
	if tok != nil {
		b.TokenHash, b.TokenID = tok.TokenHash, tokenID(tok)
	}
	binding, err := json.Marshal(b)
	if err != nil {
		return nil, tenant.ID, err
	}
	ch, err := cfg.Challenger.NewChallenge(ctx, &verify.ChallengeRequest{EKPub: ekPub, AK: req.AK, Binding: binding})
	if err != nil {
		return nil, tenant.ID, err
	}
	return &TPMChallenge{ID: ch.ID, Credential: ch.Credential, Nonce: ch.Nonce, Expires: ch.Expires}, tenant.ID, nil
}

// TPMEnroll completes challenge req.ChallengeID: the activated secret, the
// certification of the CSR key under the activated AK with the challenge
// nonce, the CSR policy, and the CSR's serial and MACs against the
// challenge's. Then the clone defence: a serial enrolled with another EK, or
// the EK enrolled with another serial, is refused (ErrCloneSuspect, audited
// as action "enroll.clone-suspect") and held for an admin as a
// registry.Quarantine record. Otherwise the device is recorded with
// Method "tpm" and its EK hash, and its certificate carries the EK hash as a
// PermanentIdentifier SAN. Re-enrolling a serial with the same EK (a reset)
// keeps the device id and supersedes its earlier certificates.
func (s *Service) TPMEnroll(ctx context.Context, req *TPMEnrollRequest) (*Result, error) {
	res, tenantID, target, err := s.tpmEnroll(ctx, req)
	if err != nil {
		action := "enroll.tpm"
		if errors.Is(err, ErrCloneSuspect) {
			action = "enroll.clone-suspect"
		}
		return nil, s.refuseTPM(ctx, req.SourceAddr, tenantID, action, target, err)
	}
	return res, nil
}

func (s *Service) tpmEnroll(ctx context.Context, req *TPMEnrollRequest) (res *Result, tenantID, target string, err error) {
	cfg := s.cfg.TPM
	if cfg == nil || cfg.Challenger == nil {
		return nil, "", "", ErrTPMDisabled
	}
	target = "challenge:" + req.ChallengeID
	csr, err := pki.ParseCSRPEM(req.CSRPEM)
	if err != nil {
		return nil, "", target, err
	}
	att, err := cfg.Challenger.Complete(ctx, req.ChallengeID, req.ActivatedSecret, req.Certify, csr)
	if err != nil {
		return nil, "", target, err
	}
	var b tpmBinding
	if err := json.Unmarshal(att.Binding, &b); err != nil {
		return nil, "", target, fmt.Errorf("challenge %s: read binding: %w", req.ChallengeID, err)
	}
	target = b.Serial
	if b.TokenID != "" {
		defer func() {
			if err != nil {
				err = fmt.Errorf("bootstrap token %s: %w", b.TokenID, err)
			}
		}()
	}
	claims, err := s.cfg.Policy.Check(csr)
	if err != nil {
		return nil, b.TenantID, target, err
	}
	if claims.Serial != b.Serial || !sameMACs(claims.MACs, b.MACs) {
		return nil, b.TenantID, target, fmt.Errorf("%w: the CSR names serial %q MACs %v, the challenge %q %v",
			pki.ErrBadCSR, claims.Serial, claims.MACs, b.Serial, b.MACs)
	}
	tenant, err := s.tenant(ctx, b.TenantID)
	if err != nil {
		return nil, b.TenantID, target, err
	}
	existing, err := s.checkClone(ctx, tenant.ID, claims.Serial, att.EKHash)
	if err != nil {
		return nil, tenant.ID, target, withMACs(err, claims.MACs)
	}
	// The activated AK is recorded: a re-key at renewal must be certified
	// by it (checkRekeyAttestation).
	akPub, err := x509.MarshalPKIXPublicKey(att.AKPub)
	if err != nil {
		return nil, tenant.ID, target, fmt.Errorf("record the AK of %q: %w", claims.Serial, err)
	}
	now := s.cfg.Now()
	dev := &registry.Device{
		ID:        s.cfg.NewDeviceID(),
		TenantID:  tenant.ID,
		Serial:    claims.Serial,
		MACs:      claims.MACs,
		Status:    registry.DeviceActive,
		Method:    MethodTPM,
		EKHash:    att.EKHash,
		AKPub:     akPub,
		CreatedAt: now,
		UpdatedAt: now,
	}
	if existing != nil {
		dev.ID, dev.CreatedAt = existing.ID, existing.CreatedAt
	}
	target = dev.ID
	issued, err := s.cfg.Issuer.IssueDevice(ctx, &pki.DeviceRequest{
		Identity: pki.Identity{
			DeviceID:    dev.ID,
			Tenant:      tenant.Name,
			Serial:      claims.Serial,
			MACs:        claims.MACs,
			TrustDomain: s.cfg.TrustDomain,
			EKHash:      att.EKHash,
		},
		PublicKey: att.KeyPub,
		Lifetime:  s.cfg.Lifetime,
		Profile:   s.cfg.Profile,
	})
	if err != nil {
		return nil, tenant.ID, target, fmt.Errorf("sign certificate for %q: %w", claims.Serial, err)
	}
	cert := issued.Certificate
	rec := CertificateRecord(cert, registry.KindDevice, tenant.ID, dev.ID, now)
	actor, detail := "tpm:"+att.EKHash, fmt.Sprintf("method=%s serial=%s ek=%s cert=%s", MethodTPM, claims.Serial, att.EKHash, rec.Serial)
	if b.TokenID != "" {
		actor, detail = "token:"+b.TokenID, detail+" token="+b.TokenID
	}
	// With a token, the store checks and spends it in this transaction;
	// SameEK still decides whether an enrolled serial may be re-enrolled
	// (only by its own EK), so a token never overrides the clone defence.
	err = s.cfg.Store.Enroll(ctx, &registry.Enrollment{
		TokenHash:   b.TokenHash,
		SameEK:      true,
		Device:      dev,
		Certificate: rec,
		Audit: &registry.AuditEvent{
			TenantID:   tenant.ID,
			Actor:      actor,
			Action:     "enroll",
			Target:     dev.ID,
			Result:     registry.ResultOK,
			Detail:     detail,
			SourceAddr: req.SourceAddr,
		},
	})
	if errors.Is(err, registry.ErrSerialConflict) {
		// Another EK enrolled this serial since checkClone looked.
		return nil, tenant.ID, target, &cloneClaim{reason: registry.ReasonSerialOtherEK, serial: claims.Serial, macs: claims.MACs,
			ekHash: att.EKHash, msg: fmt.Sprintf("serial %q EK %s: %v", claims.Serial, att.EKHash, err)}
	}
	if errors.Is(err, registry.ErrEKConflict) {
		// This EK enrolled under another serial since checkClone looked.
		return nil, tenant.ID, target, &cloneClaim{reason: registry.ReasonEKOtherSerial, serial: claims.Serial, macs: claims.MACs,
			ekHash: att.EKHash, msg: fmt.Sprintf("serial %q EK %s: %v", claims.Serial, att.EKHash, err)}
	}
	if err != nil {
		return nil, tenant.ID, target, fmt.Errorf("record enrollment of %q: %w", claims.Serial, err)
	}
	return &Result{
		DeviceID:    dev.ID,
		Certificate: cert,
		Chain:       issued.Chain,
		RenewAfter:  RenewAfter(cert),
	}, tenant.ID, dev.ID, nil
}

// spentTokenAdmission returns, for a token Admit refused only because it is
// spent, an admission carrying the token's tenant, id and hash, and that
// refusal; tpmChallenge then admits the request only as the replay of the
// enrollment that spent the token (replayOfToken). Any other refusal gives
// nil.
func (s *Service) spentTokenAdmission(ctx context.Context, token string, admitErr error) (*Admission, error) {
	if !errors.Is(admitErr, registry.ErrTokenSpent) {
		return nil, nil
	}
	t, err := s.cfg.Store.GetToken(ctx, HashToken(strings.TrimSpace(token)))
	if err != nil {
		return nil, nil
	}
	return &Admission{Method: "token", TenantID: t.TenantID, Actor: "token:" + t.ID, TokenHash: t.Hash, BoundSerial: t.Serial}, admitErr
}

// replayOfToken checks that the spent token tokenHash was spent enrolling
// this very device: serial enrolled in the tenant with this EK, and one of
// its certificates recorded with the token. A device whose answer was lost
// (power cut after the CA recorded it) thus gets a new certificate by
// attesting again with the same token, as a software device gets its
// certificate back by sending the same key; anyone else still sees a spent
// token.
func (s *Service) replayOfToken(ctx context.Context, tenantID, serial, ekHash string, tokenHash []byte) error {
	dev, err := s.cfg.Store.GetDeviceBySerial(ctx, tenantID, serial)
	if err != nil {
		return fmt.Errorf("serial %q not enrolled with it", serial)
	}
	if dev.EKHash != ekHash {
		return fmt.Errorf("serial %q was enrolled with another EK", serial)
	}
	certs, err := s.cfg.Store.ListDeviceCertificates(ctx, dev.ID)
	if err != nil {
		return fmt.Errorf("read certificates of %s: %w", dev.ID, err)
	}
	for _, c := range certs {
		if bytes.Equal(c.TokenHash, tokenHash) {
			return nil
		}
	}
	return fmt.Errorf("device %s was not enrolled with it", dev.ID)
}

// checkClone returns the device already enrolled with serial in the tenant
// (nil if none) when it may be re-enrolled by this EK: it must be active and
// bound to the same EK, and the EK must not be bound to any other device.
func (s *Service) checkClone(ctx context.Context, tenantID, serial, ekHash string) (*registry.Device, error) {
	existing, err := s.cfg.Store.GetDeviceBySerial(ctx, tenantID, serial)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		existing = nil
	case err != nil:
		return nil, fmt.Errorf("look up device %q: %w", serial, err)
	case existing.EKHash != ekHash:
		return nil, &cloneClaim{reason: registry.ReasonSerialOtherEK, serial: serial, ekHash: ekHash,
			device: existing.ID, deviceTenant: existing.TenantID, deviceEK: existing.EKHash,
			msg: fmt.Sprintf("serial %q is enrolled as device %s with EK %q, this claim has EK %s", serial, existing.ID, existing.EKHash, ekHash)}
	case existing.Status != registry.DeviceActive:
		return nil, fmt.Errorf("device %s (serial %q) is %s: %w", existing.ID, serial, existing.Status, registry.ErrDeviceNotActive)
	}
	bound, err := s.cfg.Store.ListDevices(ctx, registry.DeviceFilter{EKHash: ekHash, Limit: 10})
	if err != nil {
		return nil, fmt.Errorf("look up devices of EK %s: %w", ekHash, err)
	}
	for _, d := range bound {
		if existing == nil || d.ID != existing.ID {
			return nil, &cloneClaim{reason: registry.ReasonEKOtherSerial, serial: serial, ekHash: ekHash,
				device: d.ID, deviceTenant: d.TenantID, deviceEK: d.EKHash,
				msg: fmt.Sprintf("EK %s is enrolled as device %s (serial %q), this claim has serial %q", ekHash, d.ID, d.Serial, serial)}
		}
	}
	return existing, nil
}

// preregistered checks that the bare EK key pub was pre-registered for serial
// (and macs, when the pre-registration lists MACs) and returns the
// pre-registration's tenant.
func (s *Service) preregistered(ctx context.Context, pub crypto.PublicKey, serial string, macs []string) (*registry.Tenant, error) {
	h, err := verify.EKHash(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", verify.ErrEKUntrusted, err)
	}
	p, err := s.cfg.Store.GetPreregistration(ctx, h)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return nil, fmt.Errorf("%w: EK %s has no certificate and is not pre-registered", verify.ErrEKUntrusted, h)
	case err != nil:
		return nil, fmt.Errorf("look up pre-registration of EK %s: %w", h, err)
	case p.Serial != serial:
		return nil, fmt.Errorf("%w: EK %s is pre-registered for serial %q, not %q", verify.ErrEKUntrusted, h, p.Serial, serial)
	case len(p.MACs) > 0 && !sameMACs(p.MACs, macs):
		return nil, fmt.Errorf("%w: EK %s is pre-registered with MACs %v, not %v", verify.ErrEKUntrusted, h, p.MACs, macs)
	}
	return s.tenant(ctx, p.TenantID)
}

func (s *Service) tpmTenant(ctx context.Context) (*registry.Tenant, error) {
	name := s.cfg.TPM.Tenant
	if name == "" {
		name = registry.DefaultTenant
	}
	if id, ok := s.tpmTenantID.Load().(string); ok {
		return s.tenant(ctx, id)
	}
	t, err := s.cfg.Store.GetTenant(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("look up tenant %q: %w", name, err)
	}
	s.tpmTenantID.Store(t.ID)
	s.cacheTenant(t, s.cfg.Now())
	return t, nil
}

// tokenID is the id of the token an admission by TokenAttestor names.
func tokenID(adm *Admission) string { return strings.TrimPrefix(adm.Actor, "token:") }

// refuseTPM audits a refused TPM enrollment step and returns the error for
// the device. The detail carries the cause, which names the EK hash when one
// was known. A clone suspect (ErrCloneSuspect) is instead held for an admin
// (holdClone): recorded as a registry.Quarantine with its audit event, and
// the device is told so.
func (s *Service) refuseTPM(ctx context.Context, source, tenantID, action, target string, cause error) error {
	if held := s.holdClone(ctx, source, tenantID, cause); held != nil {
		return held
	}
	s.refuse(ctx, &Request{SourceAddr: source}, tenantID, "anonymous", target, action, cause)
	return cause
}

// ekRoots is the configured manufacturer roots plus those admins added to the
// registry ('ca tpm roots add'), read at each challenge so every replica sees
// an addition at once.
func (s *Service) ekRoots(ctx context.Context, cfg *TPMConfig) (*x509.CertPool, error) {
	added, err := s.cfg.Store.ListTPMRoots(ctx)
	if err != nil {
		return nil, fmt.Errorf("read TPM manufacturer roots: %w", err)
	}
	if len(added) == 0 {
		return cfg.EKRoots, nil
	}
	// The pool is rebuilt only when the set of registry roots changed.
	var key strings.Builder
	for _, r := range added {
		key.WriteString(r.Fingerprint)
	}
	if c, ok := s.ekPool.Load().(*ekPoolCache); ok && c.key == key.String() {
		return c.pool, nil
	}
	pool := x509.NewCertPool()
	if cfg.EKRoots != nil {
		pool = cfg.EKRoots.Clone()
	}
	for _, r := range added {
		c, err := x509.ParseCertificate(r.DER)
		if err != nil {
			return nil, fmt.Errorf("TPM root %s in the registry: %w", r.Fingerprint, err)
		}
		pool.AddCert(c)
	}
	s.ekPool.Store(&ekPoolCache{key: key.String(), pool: pool})
	return pool, nil
}

// ekPoolCache is the last pool ekRoots built, keyed by the fingerprints of
// the registry roots in it.
type ekPoolCache struct {
	key  string
	pool *x509.CertPool
}
