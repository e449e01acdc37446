// Package provision decides who may enroll and ties the decision to issuance:
// an Attestor admits a request, the CSR is checked against policy, the
// certificate is built from the device's registry identity, signed, and
// recorded with the spent credential and the audit event in one transaction
// before anything is returned.
package provision

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/registry"
)

// Issuer signs device certificates. *pki.Issuer implements it.
type Issuer interface {
	IssueDevice(ctx context.Context, req *pki.DeviceRequest) (*pki.Issued, error)
	// Chain is the issuing chain sent with every certificate.
	Chain() []*x509.Certificate
}

// Config configures a Service. Store, Issuer and TrustDomain are required.
type Config struct {
	Store       registry.Store
	Issuer      Issuer
	TrustDomain string
	// Policy limits CSR keys; the zero value allows ECDSA P-256 only.
	Policy pki.CSRPolicy
	// Lifetime of device certificates; zero means pki.DefaultLeafLifetime.
	Lifetime time.Duration
	// Profile of device certificates: pki.ProfileDefault (the SPIFFE ID and
	// one urn:dev:mac URI per MAC) or pki.ProfileSPIFFE (the SPIFFE ID only);
	// empty means pki.ProfileDefault.
	Profile string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// NewDeviceID makes ids for new devices; nil means a random UUIDv4.
	NewDeviceID func() string
	// TPM enables TPM attestation enrollment (TPMChallenge, TPMEnroll); nil
	// disables it.
	TPM *TPMConfig
	// TenantTTL is how long a tenant read from the store (its name and its
	// RequireTPM policy) is reused, so a policy change reaches this service
	// within TenantTTL; zero means DefaultTenantTTL, negative means the
	// tenant is read at every enrollment.
	TenantTTL time.Duration
}

// Service runs enrollments.
type Service struct {
	cfg     Config
	tenants sync.Map // tenant id -> *cachedTenant, reused for Config.TenantTTL
	// tpmTenantID caches the id of TPMConfig.Tenant.
	tpmTenantID atomic.Value
	// ekPool caches ekRoots' pool (*ekPoolCache).
	ekPool atomic.Value
}

// New returns a Service, or an error naming every missing field.
func New(cfg Config) (*Service, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("provision: Store is required"))
	}
	if cfg.Issuer == nil {
		errs = append(errs, errors.New("provision: Issuer is required"))
	}
	if cfg.TrustDomain == "" {
		errs = append(errs, errors.New("provision: TrustDomain is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Lifetime == 0 {
		cfg.Lifetime = pki.DefaultLeafLifetime
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.NewDeviceID == nil {
		cfg.NewDeviceID = NewUUID
	}
	if cfg.TenantTTL == 0 {
		cfg.TenantTTL = DefaultTenantTTL
	}
	return &Service{cfg: cfg}, nil
}

// Request is one enrollment request as the API received it.
type Request struct {
	// Credential is the method-specific proof (the bootstrap token for "token").
	Credential string
	// CSRPEM is the PEM certificate request.
	CSRPEM []byte
	// SourceAddr is the client address, for the audit log.
	SourceAddr string
}

// Result is what a successful enrollment returns to the device.
type Result struct {
	DeviceID    string
	Certificate *x509.Certificate
	Chain       []*x509.Certificate
	RenewAfter  time.Time
}

// Admission is an Attestor's decision to let a request proceed.
type Admission struct {
	Method   string // "token", ...
	TenantID string
	Actor    string // audit actor, e.g. "token:<id>"
	// TokenHash is spent in the enrollment transaction when set.
	TokenHash []byte
	// BoundSerial, when set, is the only serial this admission covers; it
	// also allows re-enrolling that serial (a factory reset).
	BoundSerial string
}

// Attestor decides whether a request may enroll. It must be cheap to refuse:
// it runs before any signing work.
type Attestor interface {
	Admit(ctx context.Context, req *Request) (*Admission, error)
}

// Enroll admits req with a, checks the CSR, signs and records the device.
// Refusals are audited. Errors wrap registry or pki sentinels (see
// api/errors.go for how each maps to a response).
func (s *Service) Enroll(ctx context.Context, a Attestor, req *Request) (*Result, error) {
	adm, err := a.Admit(ctx, req)
	if errors.Is(err, registry.ErrTokenSpent) {
		// The device may be retrying an enrollment whose answer it never got
		// (power cut, dropped link): same token, same key. Hand back what
		// was issued instead of stranding it.
		if res, rerr := s.replayEnrollment(ctx, req); rerr == nil {
			return res, nil
		}
	}
	if err != nil {
		s.refuse(ctx, req, "", "", "", "enroll", err)
		return nil, err
	}
	res, target, err := s.enroll(ctx, adm, req)
	if err != nil {
		s.refuse(ctx, req, adm.TenantID, adm.Actor, target, "enroll", err)
		return nil, err
	}
	return res, nil
}

func (s *Service) enroll(ctx context.Context, adm *Admission, req *Request) (*Result, string, error) {
	csr, err := pki.ParseCSRPEM(req.CSRPEM)
	if err != nil {
		return nil, "", err
	}
	claims, err := s.cfg.Policy.Check(csr)
	if err != nil {
		return nil, "", err
	}
	if adm.BoundSerial != "" && adm.BoundSerial != claims.Serial {
		return nil, claims.Serial, fmt.Errorf("token is bound to serial %q, CSR names %q: %w", adm.BoundSerial, claims.Serial, registry.ErrTokenSerialMismatch)
	}
	tenant, err := s.tenant(ctx, adm.TenantID)
	if err != nil {
		return nil, claims.Serial, err
	}
	// The key of a request admitted here is not attested (a software key,
	// or a TPM key the CA cannot tell apart from one).
	if err := requireAttested(tenant, adm.Method); err != nil {
		return nil, claims.Serial, err
	}
	now := s.cfg.Now()
	dev := &registry.Device{
		TenantID:  tenant.ID,
		Serial:    claims.Serial,
		MACs:      claims.MACs,
		Status:    registry.DeviceActive,
		Method:    adm.Method,
		CreatedAt: now,
		UpdatedAt: now,
	}
	// Only an admission bound to this serial may re-enroll it, so only then
	// is the device looked up (to keep its id). Otherwise the serial must be
	// new, which the store checks in the enrollment transaction
	// (registry.ErrSerialConflict): one read fewer on the common path.
	dev.ID = s.cfg.NewDeviceID()
	if adm.BoundSerial != "" {
		existing, err := s.cfg.Store.GetDeviceBySerial(ctx, tenant.ID, claims.Serial)
		switch {
		case err == nil:
			dev.ID, dev.CreatedAt = existing.ID, existing.CreatedAt
		case errors.Is(err, registry.ErrNotFound):
		default:
			return nil, claims.Serial, fmt.Errorf("look up device %q: %w", claims.Serial, err)
		}
	}

	issued, err := s.cfg.Issuer.IssueDevice(ctx, &pki.DeviceRequest{
		Identity: pki.Identity{
			DeviceID:    dev.ID,
			Tenant:      tenant.Name,
			Serial:      claims.Serial,
			MACs:        claims.MACs,
			TrustDomain: s.cfg.TrustDomain,
		},
		PublicKey: claims.PublicKey,
		Lifetime:  s.cfg.Lifetime,
		Profile:   s.cfg.Profile,
	})
	if err != nil {
		return nil, dev.ID, fmt.Errorf("sign certificate for %q: %w", claims.Serial, err)
	}
	cert := issued.Certificate
	rec := CertificateRecord(cert, registry.KindDevice, tenant.ID, dev.ID, now)
	err = s.cfg.Store.Enroll(ctx, &registry.Enrollment{
		TokenHash:   adm.TokenHash,
		Device:      dev,
		Certificate: rec,
		Audit: &registry.AuditEvent{
			TenantID:   tenant.ID,
			Actor:      adm.Actor,
			Action:     "enroll",
			Target:     dev.ID,
			Result:     registry.ResultOK,
			Detail:     fmt.Sprintf("method=%s serial=%s cert=%s", adm.Method, claims.Serial, rec.Serial),
			SourceAddr: req.SourceAddr,
		},
	})
	if err != nil {
		return nil, dev.ID, fmt.Errorf("record enrollment of %q: %w", claims.Serial, err)
	}
	return &Result{
		DeviceID:    dev.ID,
		Certificate: cert,
		Chain:       issued.Chain,
		RenewAfter:  RenewAfter(cert),
	}, dev.ID, nil
}

// refuse audits a refused enrollment. Auditing must not hide the refusal, so
// a failure to write the event is only reported through the returned error
// of the enrollment (which is already an error).
func (s *Service) refuse(ctx context.Context, req *Request, tenantID, actor, target, action string, cause error) {
	if actor == "" {
		actor = "anonymous"
	}
	_ = s.cfg.Store.AppendAudit(context.WithoutCancel(ctx), &registry.AuditEvent{
		TenantID:   tenantID,
		Actor:      actor,
		Action:     action,
		Target:     target,
		Result:     registry.ResultDenied,
		Detail:     cause.Error(),
		SourceAddr: req.SourceAddr,
	})
}

// CertificateRecord is the registry record of an issued certificate.
func CertificateRecord(c *x509.Certificate, kind registry.CertKind, tenantID, deviceID string, now time.Time) *registry.Certificate {
	var sans []string
	for _, u := range c.URIs {
		sans = append(sans, u.String())
	}
	sans = append(sans, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		sans = append(sans, ip.String())
	}
	return &registry.Certificate{
		Serial:    c.SerialNumber.Text(16),
		Kind:      kind,
		DeviceID:  deviceID,
		TenantID:  tenantID,
		Subject:   c.Subject.String(),
		SANs:      sans,
		NotBefore: c.NotBefore,
		NotAfter:  c.NotAfter,
		DER:       c.Raw,
		KeySHA256: KeyHash(c.RawSubjectPublicKeyInfo),
		Status:    registry.CertActive,
		CreatedAt: now,
	}
}

// KeyHash is how the registry indexes certificates by public key: SHA-256
// of the DER SubjectPublicKeyInfo.
func KeyHash(spki []byte) []byte {
	h := sha256.Sum256(spki)
	return h[:]
}

// RenewAfter is two thirds into the certificate's lifetime.
func RenewAfter(c *x509.Certificate) time.Time {
	life := c.NotAfter.Sub(c.NotBefore)
	return c.NotBefore.Add(life * 2 / 3).UTC().Truncate(time.Second)
}

// NewUUID returns an RFC 9562 version 7 UUID: a millisecond timestamp then
// 74 random bits. Ids made in time order land at the end of the registry's
// indexes instead of on random pages, so a busy CA dirties fewer pages per
// commit.
func NewUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[6:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	ms := uint64(time.Now().UnixMilli())
	for i := 5; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	b[6] = b[6]&0x0f | 0x70
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func (s *Service) chain() []*x509.Certificate { return s.cfg.Issuer.Chain() }

// replayEnrollment finds the certificate an earlier enrollment with the same
// token issued for the same key and serial, still active, and returns it.
func (s *Service) replayEnrollment(ctx context.Context, req *Request) (*Result, error) {
	csr, err := pki.ParseCSRPEM(req.CSRPEM)
	if err != nil {
		return nil, err
	}
	claims, err := s.cfg.Policy.Check(csr)
	if err != nil {
		return nil, err
	}
	tokenHash := HashToken(strings.TrimSpace(req.Credential))
	recs, err := s.cfg.Store.ListCertificatesByKey(ctx, KeyHash(csr.RawSubjectPublicKeyInfo))
	if err != nil {
		return nil, err
	}
	for i := len(recs) - 1; i >= 0; i-- {
		r := recs[i]
		if r.Kind != registry.KindDevice || r.Status != registry.CertActive || !bytes.Equal(r.TokenHash, tokenHash) {
			continue
		}
		c, err := x509.ParseCertificate(r.DER)
		if err != nil || c.Subject.SerialNumber != claims.Serial {
			continue
		}
		_ = s.cfg.Store.AppendAudit(context.WithoutCancel(ctx), &registry.AuditEvent{
			TenantID: r.TenantID, Actor: "device:" + r.DeviceID, Action: "enroll.replay", Target: r.DeviceID,
			Result: registry.ResultOK, Detail: "cert=" + r.Serial + " sent again to the same key and token", SourceAddr: req.SourceAddr,
		})
		return &Result{DeviceID: r.DeviceID, Certificate: c, Chain: s.chain(), RenewAfter: RenewAfter(c)}, nil
	}
	return nil, registry.ErrNotFound
}
