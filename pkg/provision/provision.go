// Package provision decides who may enroll and ties the decision to issuance:
// an Attestor admits a request, then one pipeline (enroll.go) checks the CSR
// and the canonical identity against policy and the registry, refuses what
// it can before signing, signs, and records the device with the spent
// credential and the audit event in one transaction before anything is
// returned.
package provision

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
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

// EnrollStore is what the enrollment and renewal pipeline reads and writes
// (*sqlstore.Store implements it). Its writes are atomic conditional writes
// that apply decisions taken here; none of them decides anything.
type EnrollStore interface {
	// Admission and identity.
	TokenStore
	GetTenant(ctx context.Context, name string) (*registry.Tenant, error)
	GetTenantByID(ctx context.Context, id string) (*registry.Tenant, error)
	GetDevice(ctx context.Context, id string) (*registry.Device, error)
	GetDeviceBySerial(ctx context.Context, tenantID, serial string) (*registry.Device, error)
	ListDevices(ctx context.Context, f registry.DeviceFilter) ([]*registry.Device, error)
	IdentityHolders(ctx context.Context, tenantID, serial string, macs []string) ([]*registry.Device, error)
	GetCertificate(ctx context.Context, serial string) (*registry.Certificate, error)
	// GetCertificateAndDevice is a renewal's two lookups in one read.
	GetCertificateAndDevice(ctx context.Context, serial string) (*registry.Certificate, *registry.Device, error)
	ListDeviceCertificates(ctx context.Context, deviceID string) ([]*registry.Certificate, error)
	GetReplacement(ctx context.Context, serial string) (*registry.Certificate, error)
	// TPM trust: pre-registered EKs and the manufacturer roots added.
	GetPreregistration(ctx context.Context, ekHash string) (*registry.Preregistration, error)
	ListTPMRoots(ctx context.Context) ([]*registry.TPMRoot, error)
	// Writes, each with its audit event in the same transaction.
	Enroll(ctx context.Context, e *registry.Enrollment) error
	Renew(ctx context.Context, r *registry.Renewal) error
	RecordCertificate(ctx context.Context, c *registry.Certificate, audit *registry.AuditEvent) error
	HoldClaim(ctx context.Context, q *registry.Quarantine, audit *registry.AuditEvent) error
	AppendAudit(ctx context.Context, ev *registry.AuditEvent) error
	// RecordRefusal counts an anonymous refusal (appendRefusal).
	RecordRefusal(ctx context.Context, r *registry.Refusal) error
}

// readiness is the optional ability of a store to tell, cheaply, that it
// cannot commit right now (*sqlstore.Store has it): the pipeline then
// refuses with registry.ErrUnavailable before signing anything.
type readiness interface {
	Ready(ctx context.Context) error
}

// ready returns the store's readiness error, nil when it has none to tell.
func (s *Service) ready(ctx context.Context) error {
	if r, ok := s.cfg.Store.(readiness); ok {
		if err := r.Ready(ctx); err != nil {
			return fmt.Errorf("the registry cannot record a certificate now, nothing was signed: %w", err)
		}
	}
	return nil
}

// Config configures a Service. Store, Issuer and TrustDomain are required.
type Config struct {
	Store       EnrollStore
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
	// TenantLimit bounds each tenant's admitted enrollments, TPM
	// challenges and renewals; nil means no limit.
	TenantLimit *TenantLimiter
	// Metrics counts enrollments and renewals by outcome; nil counts
	// nothing.
	Metrics Metrics
	// RenewGrace is how long after expiry a device may still renew its
	// certificate by proving possession of its key (RenewExpired); a
	// tenant's own RenewGrace overrides it. Zero means DefaultRenewGrace,
	// negative disables it.
	RenewGrace time.Duration
}

// Service runs enrollments.
type Service struct {
	cfg     Config
	tenants sync.Map // tenant id -> *cachedTenant, reused for Config.TenantTTL
	// tpmTenantID caches the id of TPMConfig.Tenant.
	tpmTenantID atomic.Value
	// ekPool caches ekPools' pools (*ekPoolCache).
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
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	return &Service{cfg: cfg}, nil
}

// Result is what a successful enrollment returns to the device.
type Result struct {
	DeviceID    string
	Certificate *x509.Certificate
	Chain       []*x509.Certificate
	RenewAfter  time.Time
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
		// The CRL that covers it is the one its CRL DP names.
		CRLPartition: pki.CertCRLPartition(c),
		CreatedAt:    now,
		// Which CA issuer signed it: its CRL lists it, rollover counts it.
		IssuerKeyID: pki.AuthorityKeyID(c),
	}
}

// KeyHash is how the registry indexes certificates by public key: SHA-256
// of the DER SubjectPublicKeyInfo.
func KeyHash(spki []byte) []byte {
	h := sha256.Sum256(spki)
	return h[:]
}

// RenewAfter is two thirds into the certificate's lifetime.
func RenewAfter(c *x509.Certificate) time.Time { return RenewAt(c.NotBefore, c.NotAfter) }

// RenewAt is RenewAfter of a certificate valid from notBefore to notAfter.
func RenewAt(notBefore, notAfter time.Time) time.Time {
	return notBefore.Add(notAfter.Sub(notBefore) * 2 / 3).UTC().Truncate(time.Second)
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
