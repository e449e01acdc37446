package provision

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/smallstep/go-attestation/attest"

	"devpki/pkg/pki"
	"devpki/pkg/registry"
	"devpki/pkg/tpm/verify"
)

// Renewal after long offline: a device whose certificate expired while it
// was off (in a warehouse, on a shelf) can no longer authenticate over
// mutual TLS, so it proves instead that it still holds the expired
// certificate's key by signing a fresh nonce of the CA's. The nonce lives
// in the registry (any replica completes the challenge, once); the
// certificate must be this CA's, still the device's current one, not
// revoked, and expired no longer than the grace period ago. Everything is
// checked before anything is signed, and the renewal is recorded and
// audited (ActionRenewExpired) in one transaction, as every renewal.

// DefaultRenewGrace is how long after expiry a certificate may still be
// renewed by proof of possession when Config.RenewGrace is zero.
const DefaultRenewGrace = 720 * time.Hour

// ExpiredChallengeTTL is how long a renewal challenge may be answered.
const ExpiredChallengeTTL = 5 * time.Minute

var (
	// ErrRenewGraceExpired: the certificate expired longer ago than the
	// renewal grace period (or the grace period is disabled for its
	// tenant). The device must re-enroll with a bootstrap token bound to its
	// serial. Nothing is signed.
	ErrRenewGraceExpired = errors.New("provision: certificate expired beyond the renewal grace period")
	// ErrExpiredProof: the proof of possession of the expired
	// certificate's key is wrong (bad signature, a challenge issued for
	// another certificate). Nothing is signed.
	ErrExpiredProof = errors.New("provision: proof of possession of the expired certificate's key refused")
)

// ExpiredChallengeStore keeps the challenges of expired renewals
// (*sqlstore.Store implements it). Consume is single use across replicas
// and answers registry.ErrChallengeNotFound, ErrChallengeUsed or
// ErrChallengeExpired.
type ExpiredChallengeStore interface {
	PutRenewChallenge(ctx context.Context, c *registry.RenewChallenge) error
	ConsumeRenewChallenge(ctx context.Context, id string, now time.Time) (*registry.RenewChallenge, error)
}

// ExpiredChallengeRequest asks for a challenge to renew an expired
// certificate.
type ExpiredChallengeRequest struct {
	// CertPEM is the expired certificate (PEM; the leaf first).
	CertPEM []byte
	// SourceAddr is the client address, for the audit log.
	SourceAddr string
}

// ExpiredChallenge is the CA's answer: the device signs
// pki.ExpiredRenewalMessage(Nonce, cert, csr) with the certificate's key and
// sends it back with ID before Expires.
type ExpiredChallenge struct {
	ID      string
	Nonce   []byte
	Expires time.Time
}

// RenewExpiredRequest is the answer to an ExpiredChallenge.
type RenewExpiredRequest struct {
	ChallengeID string
	// CertPEM is the expired certificate the challenge was issued for.
	CertPEM []byte
	// Signature is the certificate key's signature over
	// pki.ExpiredRenewalMessage(nonce, cert, CSR), as pki.SignDetached makes
	// it (ECDSA with SHA-256, or SHA-384 for P-384; RSA PKCS #1 v1.5
	// SHA-256; Ed25519).
	Signature []byte
	// CSRPEM, when set, re-keys: a CSR for the same serial and MACs.
	CSRPEM []byte
	// Certify is required of a TPM-attested device: TPM2_Certify, by the
	// AK recorded at its enrollment, of the key to be certified (the new
	// CSR's, or the current one for a same-key renewal) over
	// pki.ExpiredRenewalQualifyingData(nonce, cert).
	Certify *attest.CertificationParameters
	// SourceAddr is the client address, for the audit log.
	SourceAddr string
}

// renewGrace is how long after expiry tenant's certificates renew by
// proof of possession; zero or less is disabled.
func (s *Service) renewGrace(tenant *registry.Tenant) time.Duration {
	switch {
	case tenant != nil && tenant.RenewGrace != 0:
		return tenant.RenewGrace
	case s.cfg.RenewGrace == 0:
		return DefaultRenewGrace
	}
	return s.cfg.RenewGrace
}

func (s *Service) expiredChallenges() (ExpiredChallengeStore, error) {
	cs, ok := s.cfg.Store.(ExpiredChallengeStore)
	if !ok {
		return nil, errors.New("provision: the registry keeps no renewal challenges")
	}
	return cs, nil
}

// RenewExpiredChallenge issues a challenge for the renewal of an expired
// certificate, after every check that needs no proof (expiredCandidate):
// a certificate that could not be renewed gets no challenge. Refusals are
// counted in the refusal log (nobody is authenticated yet).
func (s *Service) RenewExpiredChallenge(ctx context.Context, req *ExpiredChallengeRequest) (*ExpiredChallenge, error) {
	who := Actor{Kind: ActorAnonymous, Source: req.SourceAddr}
	cert, err := parseExpiredCert(req.CertPEM)
	if err != nil {
		return nil, s.refuse(ctx, who, "", ActionRenewExpiredChallenge, "", err)
	}
	c, err := s.expiredCandidate(ctx, cert)
	if err != nil {
		return nil, s.refuse(ctx, who, c.tenantID(), ActionRenewExpiredChallenge, c.target(cert), err)
	}
	cs, err := s.expiredChallenges()
	if err != nil {
		return nil, err
	}
	var id [16]byte
	nonce := make([]byte, 32)
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	ch := &registry.RenewChallenge{ID: hex.EncodeToString(id[:]), Nonce: nonce, CertSerial: c.rec.Serial,
		Expires: s.cfg.Now().Add(ExpiredChallengeTTL)}
	if err := cs.PutRenewChallenge(ctx, ch); err != nil {
		return nil, fmt.Errorf("record renewal challenge: %w", err)
	}
	return &ExpiredChallenge{ID: ch.ID, Nonce: ch.Nonce, Expires: ch.Expires}, nil
}

// RenewExpired renews an expired certificate whose key signed the nonce of
// a challenge issued for it (RenewExpiredChallenge): same key, or the
// CSR's new key. The checks of the challenge run again at the service
// clock, then the proof, then those of every renewal (re-key forced by an
// admin, tenant rate and key policy, TPM certification), all before
// signing. A renewal whose answer was lost may be asked again with a new
// challenge: the certificate it issued is returned while it holds the same
// key. Refusals before the proof go to the refusal log; after it, to the
// device's tenant's audit chain.
func (s *Service) RenewExpired(ctx context.Context, req *RenewExpiredRequest) (res *Result, err error) {
	defer func() { s.cfg.Metrics.Renewal(Outcome(err)) }()
	who := Actor{Kind: ActorAnonymous, Source: req.SourceAddr}
	target := "challenge:" + req.ChallengeID
	cert, err := parseExpiredCert(req.CertPEM)
	if err != nil {
		return nil, s.refuse(ctx, who, "", ActionRenewExpired, target, err)
	}
	cs, err := s.expiredChallenges()
	if err != nil {
		return nil, err
	}
	ch, err := cs.ConsumeRenewChallenge(ctx, req.ChallengeID, s.cfg.Now())
	if err != nil {
		return nil, s.refuse(ctx, who, "", ActionRenewExpired, target, challengeErr(err))
	}
	c, err := s.expiredCandidate(ctx, cert)
	if err != nil {
		return nil, s.refuse(ctx, who, c.tenantID(), ActionRenewExpired, c.target(cert), err)
	}
	var csr *x509.CertificateRequest
	var csrDER []byte
	if len(req.CSRPEM) > 0 {
		if csr, err = pki.ParseCSRPEM(req.CSRPEM); err != nil {
			return nil, s.refuse(ctx, who, c.tenantID(), ActionRenewExpired, c.target(cert), err)
		}
		csrDER = csr.Raw
	}
	if err := checkPossession(ch, cert, csrDER, req.Signature); err != nil {
		return nil, s.refuse(ctx, who, c.tenantID(), ActionRenewExpired, c.target(cert), err)
	}
	// The key is proven: from here the device is who asks.
	who = Actor{Kind: ActorDevice, ID: c.dev.ID, TenantID: c.dev.TenantID, Source: req.SourceAddr}
	res, err = s.renewExpired(ctx, c, cert, ch, csr, req, who)
	if err != nil {
		return nil, s.refuse(ctx, who, c.dev.TenantID, ActionRenewExpired, c.dev.ID, err)
	}
	return res, nil
}

// expiredCandidate is what RenewExpiredChallenge and RenewExpired found.
type expiredCandidate struct {
	rec    *registry.Certificate
	dev    *registry.Device
	tenant *registry.Tenant
}

func (c *expiredCandidate) tenantID() string {
	if c == nil || c.rec == nil {
		return ""
	}
	return c.rec.TenantID
}

func (c *expiredCandidate) target(cert *x509.Certificate) string {
	if c != nil && c.dev != nil {
		return c.dev.ID
	}
	return "cert:" + cert.SerialNumber.Text(16)
}

// parseExpiredCert reads the first certificate of PEM.
func parseExpiredCert(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%w: certificate: expected a PEM CERTIFICATE block", ErrInvalidArgument)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate: %v", ErrInvalidArgument, err)
	}
	return cert, nil
}

// expiredCandidate runs every check of an expired renewal that needs no
// proof, at the service clock: the certificate is this CA's (it chains to
// the issuer's root as of its own expiry, and is the very certificate the
// registry recorded), a device's, not revoked, the device's current one
// (or superseded, for a lost answer), its device active; it has expired,
// no longer than its tenant's grace period ago. The candidate it returns
// holds what it read so far, also with an error.
func (s *Service) expiredCandidate(ctx context.Context, cert *x509.Certificate) (*expiredCandidate, error) {
	c := &expiredCandidate{}
	serial := cert.SerialNumber.Text(16)
	if err := s.issuedByUs(cert); err != nil {
		return c, err
	}
	rec, err := s.cfg.Store.GetCertificate(ctx, serial)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return c, fmt.Errorf("certificate %s is unknown to this CA: %w", serial, registry.ErrNotRenewable)
	case err != nil:
		return c, fmt.Errorf("look up certificate %s: %w", serial, err)
	}
	c.rec = rec
	switch {
	case string(rec.DER) != string(cert.Raw):
		return c, fmt.Errorf("certificate %s is not the one this CA issued: %w", serial, registry.ErrNotRenewable)
	case rec.Kind != registry.KindDevice || rec.DeviceID == "":
		return c, fmt.Errorf("certificate %s is not a device certificate: %w", serial, registry.ErrNotRenewable)
	case rec.Status == registry.CertRevoked:
		return c, fmt.Errorf("certificate %s is revoked: a revoked certificate never renews: %w", serial, registry.ErrNotRenewable)
	}
	dev, err := s.cfg.Store.GetDevice(ctx, rec.DeviceID)
	if err != nil {
		return c, fmt.Errorf("look up device %s: %w", rec.DeviceID, err)
	}
	c.dev = dev
	if dev.Status != registry.DeviceActive {
		return c, fmt.Errorf("device %s is %s: %w", dev.ID, dev.Status, registry.ErrDeviceNotActive)
	}
	tenant, err := s.tenant(ctx, dev.TenantID)
	if err != nil {
		return c, err
	}
	c.tenant = tenant
	now := s.cfg.Now()
	if now.Before(cert.NotAfter) {
		return c, fmt.Errorf("%w: certificate %s is valid until %s: renew it over mutual TLS (POST /v1/renew; enroll renew)",
			ErrInvalidArgument, serial, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	reenroll := fmt.Sprintf("re-enroll the device with a bootstrap token bound to its serial "+
		"(ca token create --tenant %s --serial %s, then enroll --token-file ... on the device)", tenant.Name, dev.Serial)
	grace := s.renewGrace(tenant)
	if grace <= 0 {
		return c, fmt.Errorf("%w: certificate %s expired at %s and tenant %q does not renew expired certificates (renew.grace_period 0): %s",
			ErrRenewGraceExpired, serial, cert.NotAfter.UTC().Format(time.RFC3339), tenant.Name, reenroll)
	}
	if ago := now.Sub(cert.NotAfter); ago > grace {
		return c, fmt.Errorf("%w: certificate %s expired at %s, %s ago, beyond the grace period of %s: %s",
			ErrRenewGraceExpired, serial, cert.NotAfter.UTC().Format(time.RFC3339), ago.Round(time.Second), grace, reenroll)
	}
	return c, nil
}

// rooted is the optional ability of an Issuer to name its root (*pki.Issuer
// has it).
type rooted interface{ Root() *x509.Certificate }

// issuedByUs checks that cert chains to this CA as of its expiry: every
// validity period is judged at cert.NotAfter, so only the expiry is
// ignored. An issuer that names no root is checked by its chain alone.
func (s *Service) issuedByUs(cert *x509.Certificate) error {
	chain := s.chain()
	inter := x509.NewCertPool()
	for _, c := range chain {
		inter.AddCert(c)
	}
	roots := x509.NewCertPool()
	if r, ok := s.cfg.Issuer.(rooted); ok && r.Root() != nil {
		roots.AddCert(r.Root())
	} else {
		roots = inter
	}
	_, err := cert.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: cert.NotAfter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return fmt.Errorf("%w: certificate %s does not chain to this CA: %v", ErrUnauthenticated, cert.SerialNumber.Text(16), err)
	}
	return nil
}

// challengeErr maps the registry's challenge errors to the verify
// sentinels the API answers (challenge-expired, challenge-used).
func challengeErr(err error) error {
	for _, m := range []struct{ from, to error }{
		{registry.ErrChallengeNotFound, verify.ErrChallengeNotFound},
		{registry.ErrChallengeUsed, verify.ErrChallengeUsed},
		{registry.ErrChallengeExpired, verify.ErrChallengeExpired},
	} {
		if errors.Is(err, m.from) {
			return fmt.Errorf("renewal challenge: %w: %w", m.to, err)
		}
	}
	return err
}

// checkPossession verifies that the certificate's key signed the
// challenge's nonce bound to the certificate and CSR, and that the
// challenge was issued for this certificate.
func checkPossession(ch *registry.RenewChallenge, cert *x509.Certificate, csrDER, sig []byte) error {
	serial := cert.SerialNumber.Text(16)
	if ch.CertSerial != serial {
		return fmt.Errorf("%w: the challenge was issued for certificate %s, not %s", ErrExpiredProof, ch.CertSerial, serial)
	}
	alg, err := detachedAlgorithm(cert.PublicKey)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrExpiredProof, err)
	}
	if err := cert.CheckSignature(alg, pki.ExpiredRenewalMessage(ch.Nonce, cert, csrDER), sig); err != nil {
		return fmt.Errorf("%w: the signature over the challenge does not verify with certificate %s's key: %v",
			ErrExpiredProof, serial, err)
	}
	return nil
}

// detachedAlgorithm is the signature algorithm pki.SignDetached uses for a
// key of pub's type.
func detachedAlgorithm(pub crypto.PublicKey) (x509.SignatureAlgorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P384() || k.Curve == elliptic.P521() {
			return x509.ECDSAWithSHA384, nil
		}
		return x509.ECDSAWithSHA256, nil
	case *rsa.PublicKey:
		return x509.SHA256WithRSA, nil
	case ed25519.PublicKey:
		return x509.PureEd25519, nil
	}
	return 0, fmt.Errorf("unsupported key type %T", pub)
}

// renewExpired is RenewExpired after the proof: the decisions of a
// renewal, then sign and record.
func (s *Service) renewExpired(ctx context.Context, c *expiredCandidate, cert *x509.Certificate, ch *registry.RenewChallenge,
	csr *x509.CertificateRequest, req *RenewExpiredRequest, who Actor) (*Result, error) {
	dev, tenant, serial := c.dev, c.tenant, c.rec.Serial
	pub := cert.PublicKey
	if csr != nil {
		claims, err := s.cfg.Policy.Check(csr)
		if err != nil {
			return nil, err
		}
		if !registry.SameSerial(claims.Serial, dev.Serial) || !sameMACs(claims.MACs, dev.MACs) {
			return nil, fmt.Errorf("%w: the CSR names serial %q MACs %v, the device is %q %v",
				pki.ErrBadCSR, claims.Serial, claims.MACs, dev.Serial, dev.MACs)
		}
		pub = claims.PublicKey
	}
	sameKey := keysEqual(pub, cert.PublicKey)
	attested, err := checkExpiredAttestation(dev, req.Certify, pki.ExpiredRenewalQualifyingData(ch.Nonce, cert), pub)
	if err != nil {
		return nil, err
	}
	if c.rec.Status == registry.CertSuperseded {
		if rep, err := s.replay(ctx, serial, pub); err == nil {
			return rep, nil
		}
		return nil, fmt.Errorf("certificate %s was already renewed; renew with the newer one: %w", serial, registry.ErrNotRenewable)
	}
	if dev.RekeyRequired && sameKey {
		return nil, fmt.Errorf("device %s must renew with a new key: %w", dev.ID, registry.ErrRekeyRequired)
	}
	if err := s.cfg.TenantLimit.Allow(tenant.ID, tenant.Name, s.cfg.Now()); err != nil {
		return nil, err
	}
	if err := tenantAdmits(tenant, "", pub); err != nil {
		return nil, err
	}
	id := pki.Identity{
		DeviceID: dev.ID, Tenant: tenant.Name, Serial: dev.Serial, MACs: dev.MACs, TrustDomain: s.cfg.TrustDomain,
	}
	if sameKey || attested {
		// As in renew: the same key, or one certified by the device's AK,
		// keeps the EK identity.
		id.EKHash = dev.EKHash
	}
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	issued, err := s.cfg.Issuer.IssueDevice(ctx, &pki.DeviceRequest{
		Identity: id, PublicKey: pub, Lifetime: s.certLifetime(tenant), Profile: s.cfg.Profile,
	})
	if err != nil {
		return nil, fmt.Errorf("sign renewal of %s: %w", dev.ID, err)
	}
	now := s.cfg.Now()
	newRec := CertificateRecord(issued.Certificate, registry.KindDevice, tenant.ID, dev.ID, now)
	err = s.cfg.Store.Renew(ctx, &registry.Renewal{
		OldSerial: serial, SameKey: sameKey, Certificate: newRec,
		Audit: event(who, tenant.ID, ActionRenewExpired, dev.ID, registry.ResultOK,
			fmt.Sprintf("cert=%s replaces=%s expired_at=%s new_key=%t", newRec.Serial, serial,
				cert.NotAfter.UTC().Format(time.RFC3339), !sameKey)),
	})
	if err != nil {
		return nil, fmt.Errorf("record renewal of %s: %w", dev.ID, err)
	}
	c2 := issued.Certificate
	return &Result{DeviceID: dev.ID, Certificate: c2, Chain: issued.Chain, RenewAfter: RenewAfter(c2)}, nil
}

// checkExpiredAttestation decides, for a TPM-attested device, that pub —
// the key to certify, new or the current one — is a key of the TPM whose
// AK the device activated at enrollment: certified by that AK over
// qualifying (true, nil). A device that is not TPM-attested needs no
// certification (false, nil); a certification it sends is ignored.
func checkExpiredAttestation(dev *registry.Device, certify *attest.CertificationParameters, qualifying []byte, pub crypto.PublicKey) (bool, error) {
	if dev.Method != MethodTPM && len(dev.AKPub) == 0 {
		return false, nil
	}
	if len(dev.AKPub) == 0 {
		return false, fmt.Errorf("%w: device %s was enrolled by TPM attestation before its attestation key was recorded: "+
			"re-enroll by attestation (the same EK keeps the device id)", ErrTPMCertifyRequired, dev.ID)
	}
	if certify == nil {
		return false, fmt.Errorf("%w: this device's key is TPM-attested: the key must be certified by the device's AK over "+
			"the challenge (enroll renew on the device does it)", ErrTPMCertifyRequired)
	}
	akPub, err := x509.ParsePKIXPublicKey(dev.AKPub)
	if err != nil {
		return false, fmt.Errorf("read the attestation key of device %s: %w", dev.ID, err)
	}
	if err := verify.VerifyCertification(akPub, *certify, qualifying, pub); err != nil {
		return false, fmt.Errorf("expired renewal of device %s (EK %s): %w", dev.ID, dev.EKHash, err)
	}
	return true, nil
}
