package provision

import (
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

// Enrollment methods, as recorded on devices (registry.Device.Method).
const (
	MethodToken = "token" // a bootstrap token
	MethodTPM   = "tpm"   // TPM attestation
)

// ErrTPMDisabled: the CA has no TPM configuration. Other refusals of TPM
// enrollment are the verify package's sentinels (ErrEKUntrusted,
// ErrAKInvalid, ErrActivation, ErrCertify, ErrCSR, ErrChallenge*), wrapped.
var ErrTPMDisabled = errors.New("provision: TPM attestation enrollment is not enabled")

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

// tpmBinding is what the device claimed in its challenge request, kept with
// the pending challenge (verify.ChallengeRequest.Binding): the admission of
// its answer (TPMAttestor).
type tpmBinding struct {
	TenantID string   `json:"tenant_id"`
	Serial   string   `json:"serial"`
	MACs     []string `json:"macs"`
	// TokenHash and TokenID are the bootstrap token presented with the
	// challenge request, if any: the enrollment spends it (unless Replay:
	// it was spent by this device's own enrollment), and Reinstate is its
	// reinstate flag.
	TokenHash []byte `json:"token_hash,omitempty"`
	TokenID   string `json:"token_id,omitempty"`
	Replay    bool   `json:"replay,omitempty"`
	Reinstate bool   `json:"reinstate,omitempty"`
}

// TPMChallenge checks the device's EK and AK and returns a
// credential-activation challenge. The EK must come with a certificate that
// chains to the configured manufacturer roots (the key challenged is the
// verified certificate's), or be a bare key pre-registered for the serial.
// A bootstrap token (req.Token) goes through the same admission as at
// /v1/enroll and chooses the tenant. The claimed serial and MACs then go
// through the pipeline's identity rules and decision (enroll.go), so a
// clone suspect, a conflict or a revoked device is refused now, before any
// TPM work; the claim is bound to the challenge, and its answer
// (TPMAttestor, then Service.Enroll) must name the same. Refusals are
// audited.
func (s *Service) TPMChallenge(ctx context.Context, req *TPMChallengeRequest) (*TPMChallenge, error) {
	adm := &Admission{Method: MethodTPM, Actor: Actor{Kind: ActorAnonymous, Source: req.SourceAddr}}
	ch, err := s.tpmChallenge(ctx, req, adm)
	if err != nil {
		return nil, s.refuse(ctx, adm.Actor, adm.TenantID, ActionEnrollTPMChallenge, req.Serial, namingToken(adm, err))
	}
	return ch, nil
}

// tpmChallenge fills adm as it learns who asks (the token, the tenant, the
// EK), so that a refusal is audited with what was known.
func (s *Service) tpmChallenge(ctx context.Context, req *TPMChallengeRequest, adm *Admission) (*TPMChallenge, error) {
	// The bootstrap token first: a malformed or unknown one is refused
	// before anything else.
	if req.Token != "" {
		tok, err := admitToken(ctx, s.cfg.Store, s.cfg.Now, req.Token, req.SourceAddr)
		if err != nil {
			return nil, err
		}
		*adm = *tok
		adm.Method = MethodTPM
	}
	cfg := s.cfg.TPM
	if cfg == nil || cfg.Challenger == nil {
		return nil, ErrTPMDisabled
	}
	if err := pki.ValidateSerial(req.Serial); err != nil {
		return nil, fmt.Errorf("%w: serial: %w", ErrInvalidArgument, err)
	}
	macs, err := pki.NormalizeMACs(req.MACs)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	var tenant *registry.Tenant
	if adm.TokenHash != nil {
		tenant, err = s.tenant(ctx, adm.TenantID)
	} else if tenant, err = s.tpmTenant(ctx); err == nil {
		adm.TenantID = tenant.ID
	}
	if err != nil {
		return nil, err
	}
	var ekPub crypto.PublicKey
	switch {
	case len(req.EKCertDER) > 0 && len(req.EKPubDER) > 0:
		return nil, fmt.Errorf("%w: send an EK certificate or an EK public key, not both", ErrInvalidArgument)
	case len(req.EKCertDER) > 0:
		ekCert, err := verify.ParseEKCertificate(req.EKCertDER)
		if err != nil {
			return nil, err
		}
		roots, inters, err := s.ekPools(ctx, cfg)
		if err != nil {
			return nil, err
		}
		if err := verify.VerifyEKCertificate(ekCert, roots, inters, s.cfg.Now()); err != nil {
			return nil, err
		}
		ekPub = ekCert.PublicKey
	case len(req.EKPubDER) > 0:
		pub, err := x509.ParsePKIXPublicKey(req.EKPubDER)
		if err != nil {
			return nil, fmt.Errorf("%w: parse EK public key: %w", verify.ErrEKUntrusted, err)
		}
		pt, err := s.preregistered(ctx, pub, req.Serial, macs)
		if err != nil {
			return nil, err
		}
		if adm.TokenHash != nil && pt.ID != tenant.ID {
			return nil, fmt.Errorf("the EK is pre-registered in tenant %q, the token is for tenant %q: %w",
				pt.Name, tenant.Name, registry.ErrTokenTenantMismatch)
		}
		adm.TenantID, ekPub = pt.ID, pub
	default:
		return nil, fmt.Errorf("%w: no EK certificate or EK public key", verify.ErrEKUntrusted)
	}
	ekHash, err := verify.EKHash(ekPub)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", verify.ErrEKUntrusted, err)
	}
	adm.EKHash = ekHash
	if adm.TokenHash == nil {
		adm.Actor = Actor{Kind: ActorTPM, ID: ekHash, TenantID: adm.TenantID, Source: req.SourceAddr}
	}
	// The same rules as the enrollment, before the TPM work; the enrollment
	// applies them again.
	id, err := s.identity(ctx, adm, req.Serial, macs, nil)
	if err != nil {
		return nil, err
	}
	if adm.Replay {
		if _, _, err := s.replayed(ctx, adm, id.tenant.ID, id.serial); err != nil {
			return nil, err
		}
	}
	if _, err := s.decide(ctx, adm, id); err != nil {
		return nil, err
	}
	binding, err := json.Marshal(tpmBinding{
		TenantID: id.tenant.ID, Serial: req.Serial, MACs: macs,
		TokenHash: adm.TokenHash, TokenID: adm.TokenID, Replay: adm.Replay, Reinstate: adm.Reinstate,
	})
	if err != nil {
		return nil, err
	}
	ch, err := cfg.Challenger.NewChallenge(ctx, &verify.ChallengeRequest{EKPub: ekPub, AK: req.AK, Binding: binding})
	if err != nil {
		return nil, err
	}
	return &TPMChallenge{ID: ch.ID, Credential: ch.Credential, Nonce: ch.Nonce, Expires: ch.Expires}, nil
}

// TPMAttestor admits the answer to a TPM challenge (Request.TPM): the
// activated secret, and the certification of the CSR's key under the
// activated AK with the challenge nonce (verify.Challenger.Complete). The
// Admission binds the serial and MACs of the challenge, carries the EK
// hash, the AK and the attested key as evidence, and the bootstrap token
// presented with the challenge, checked again now (it may have been spent
// or expired meanwhile). The device is recorded with Method "tpm" and its
// certificate carries the EK hash as a PermanentIdentifier SAN.
type TPMAttestor struct {
	// Challenger is the one that issued the challenges (TPMConfig.Challenger).
	Challenger *verify.Challenger
	// Store holds the bootstrap tokens.
	Store TokenStore
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Admit completes the challenge and returns the admission it proves.
func (a TPMAttestor) Admit(ctx context.Context, req *Request) (*Admission, error) {
	if req.TPM == nil {
		return nil, fmt.Errorf("%w: no answer to a TPM challenge", ErrInvalidArgument)
	}
	csr, err := req.CSR()
	if err != nil {
		return nil, err
	}
	att, err := a.Challenger.Complete(ctx, req.TPM.ChallengeID, req.TPM.ActivatedSecret, req.TPM.Certify, csr)
	if err != nil {
		return nil, err
	}
	var b tpmBinding
	if err := json.Unmarshal(att.Binding, &b); err != nil {
		return nil, fmt.Errorf("challenge %s: read binding: %w", req.TPM.ChallengeID, err)
	}
	akPub, err := x509.MarshalPKIXPublicKey(att.AKPub)
	if err != nil {
		return nil, fmt.Errorf("challenge %s: record the AK: %w", req.TPM.ChallengeID, err)
	}
	adm := &Admission{
		Method:      MethodTPM,
		TenantID:    b.TenantID,
		Actor:       Actor{Kind: ActorTPM, ID: att.EKHash, TenantID: b.TenantID, Source: req.SourceAddr},
		Replay:      b.Replay,
		Reinstate:   b.Reinstate,
		BoundSerial: b.Serial,
		BoundMACs:   append([]string{}, b.MACs...),
		BoundBy:     "challenge",
		EKHash:      att.EKHash,
		AKPub:       akPub,
		AttestedKey: att.KeyPub,
	}
	if b.TokenHash == nil {
		return adm, nil
	}
	adm.TokenHash, adm.TokenID = b.TokenHash, b.TokenID
	adm.Actor = Actor{Kind: ActorToken, ID: b.TokenID, TenantID: b.TenantID, Source: req.SourceAddr}
	if b.Replay {
		return adm, nil
	}
	t, err := a.Store.GetToken(ctx, b.TokenHash)
	if err != nil {
		return nil, fmt.Errorf("bootstrap token %s: %w", b.TokenID, err)
	}
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	if err := t.Spendable(now()); err != nil {
		return nil, err
	}
	return adm, nil
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
	case !registry.SameSerial(p.Serial, serial):
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

// ekPools are the configured manufacturer roots and intermediates plus the
// roots and intermediates admins added to the registry ('ca tpm roots
// add'), read at each challenge so every replica sees an addition at once.
func (s *Service) ekPools(ctx context.Context, cfg *TPMConfig) (roots, inters *x509.CertPool, err error) {
	added, err := s.cfg.Store.ListTPMRoots(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("read TPM manufacturer roots: %w", err)
	}
	if len(added) == 0 {
		return cfg.EKRoots, cfg.EKIntermediates, nil
	}
	// The pools are rebuilt only when the set of registry certificates
	// changed.
	var key strings.Builder
	for _, r := range added {
		key.WriteString(string(r.Kind) + ":" + r.Fingerprint + ",")
	}
	if c, ok := s.ekPool.Load().(*ekPoolCache); ok && c.key == key.String() {
		return c.pool, c.inters, nil
	}
	roots, inters = x509.NewCertPool(), x509.NewCertPool()
	if cfg.EKRoots != nil {
		roots = cfg.EKRoots.Clone()
	}
	if cfg.EKIntermediates != nil {
		inters = cfg.EKIntermediates.Clone()
	}
	for _, r := range added {
		c, err := x509.ParseCertificate(r.DER)
		if err != nil {
			return nil, nil, fmt.Errorf("TPM %s %s in the registry: %w", r.Kind, r.Fingerprint, err)
		}
		if r.Kind == registry.TPMIntermediate {
			inters.AddCert(c)
		} else {
			roots.AddCert(c)
		}
	}
	s.ekPool.Store(&ekPoolCache{key: key.String(), pool: roots, inters: inters})
	return roots, inters, nil
}

// ekPoolCache is the last pools ekPools built, keyed by the kinds and fingerprints of
// the registry roots in it.
type ekPoolCache struct {
	key    string
	pool   *x509.CertPool
	inters *x509.CertPool
}
