package provision

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/smallstep/go-attestation/attest"

	"devpki/pkg/pki"
	"devpki/pkg/registry"
	"devpki/pkg/tpm/verify"
)

// ErrTPMCertifyRequired: a TPM-attested device re-keys without proving that
// the new key lives in the same TPM (RenewRequest.Certify missing), or the
// device was enrolled by attestation before its AK was recorded
// (registry.Device.AKPub empty) and must re-enroll by attestation first.
// Nothing is signed.
var ErrTPMCertifyRequired = errors.New("provision: TPM certification of the new key required")

// RenewRequest is a renewal as the API received it: the verified client
// certificate is the only credential.
type RenewRequest struct {
	// Peer is the client certificate, already verified to this CA's root;
	// nil when the client presented none (refused: ErrUnauthenticated).
	Peer *x509.Certificate
	// CSRPEM, when set, re-keys: a CSR for the same serial and MACs, or one
	// that repeats Peer's subject and subjectAltName (pki.RepeatsIdentity,
	// as an EST client sends).
	CSRPEM []byte
	// Tenant, when set, is the tenant name the request was addressed to (an
	// EST label): a certificate of another tenant is refused (ErrForbidden).
	Tenant string
	// Certify, for a re-key of a TPM-attested device, is the TPM2_Certify of
	// the CSR's key by the AK recorded at the device's TPM enrollment, its
	// extraData the SHA-256 of Peer.Raw (RekeyExtraData). Nil means none; it
	// is ignored for a same-key renewal and for devices not enrolled by TPM
	// attestation.
	Certify *attest.CertificationParameters
	// SourceAddr is the client address, for the audit log.
	SourceAddr string
	// Unverified says Peer is the client certificate as the TLS handshake
	// received it, its chain not verified (the API's renewal route skips
	// that): Renew authenticates it by the registry instead. Its DER must
	// be the recorded certificate's, byte for byte, and it must be valid
	// for client authentication at the service clock. The handshake proved
	// possession of its key; the record, written when this CA signed it,
	// proves the CA issued it — one lookup the renewal makes anyway, in
	// place of a signature check per chain link. Anything else is
	// ErrUnauthenticated, refused as if no certificate had been presented.
	Unverified bool
}

// RekeyExtraData is the qualifying data a TPM-attested device certifies its
// new key with at renewal: the SHA-256 of the DER of the certificate it
// presents (the one being renewed). It ties the certification to that
// certificate, so one cannot be replayed to re-key with another.
func RekeyExtraData(peer *x509.Certificate) []byte {
	h := sha256.Sum256(peer.Raw)
	return h[:]
}

// Renew issues a new certificate for the device that owns req.Peer: same key,
// or the CSR's new key. It is refused (and audited) for an unknown, revoked
// or superseded certificate, a device that is not active, and — after an
// admin's rotate — the old key (registry.ErrRekeyRequired). A renewal whose
// answer was lost may be sent again: if the presented certificate was
// already renewed with the same key, that renewal's certificate is returned.
//
// A device enrolled by TPM attestation (Method "tpm") re-keys only to a key
// of the same TPM: the request must carry a certification of the new key by
// the AK recorded at enrollment (registry.Device.AKPub) over
// RekeyExtraData(req.Peer) (verify.VerifyCertification). Without one, or
// for a device enrolled before AKs were recorded, it is refused with
// ErrTPMCertifyRequired; with an invalid one, with verify.ErrCertify. The
// re-keyed certificate keeps the EK identity and the device stays Method
// "tpm". Other devices re-key as before; a Certify they send is ignored.
func (s *Service) Renew(ctx context.Context, req *RenewRequest) (res *Result, err error) {
	defer func() { s.cfg.Metrics.Renewal(Outcome(err)) }()
	if req.Peer == nil {
		return nil, s.refuse(ctx, Actor{Kind: ActorAnonymous, Source: req.SourceAddr}, "", ActionRenew, "",
			fmt.Errorf("no client certificate: renewal is authenticated by the device's current certificate over mutual TLS: %w",
				ErrUnauthenticated))
	}
	res, target, err := s.renew(ctx, req)
	if err != nil && req.Unverified && errors.Is(err, ErrUnauthenticated) {
		// Not a certificate of this CA's: nothing to attribute it to.
		return nil, s.refuse(ctx, Actor{Kind: ActorAnonymous, Source: req.SourceAddr}, "", ActionRenew, "", err)
	}
	if err != nil {
		// Refusals land in the device's tenant's log when the CA knows it.
		serial := req.Peer.SerialNumber.Text(16)
		tenantID := ""
		if rec, rerr := s.cfg.Store.GetCertificate(ctx, serial); rerr == nil {
			tenantID = rec.TenantID
		}
		who := Actor{Kind: ActorCert, ID: serial, TenantID: tenantID, Source: req.SourceAddr}
		return nil, s.refuse(ctx, who, tenantID, ActionRenew, target, err)
	}
	return res, nil
}

func (s *Service) renew(ctx context.Context, req *RenewRequest) (*Result, string, error) {
	serial := req.Peer.SerialNumber.Text(16)
	rec, dev, err := s.cfg.Store.GetCertificateAndDevice(ctx, serial)
	if req.Unverified {
		if aerr := s.recordVouches(req.Peer, rec, err); aerr != nil {
			return nil, "", aerr
		}
	}
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return nil, "", fmt.Errorf("certificate %s is unknown to this CA: %w", serial, registry.ErrNotRenewable)
	case err != nil:
		return nil, "", fmt.Errorf("look up certificate %s: %w", serial, err)
	case rec.Kind != registry.KindDevice || rec.DeviceID == "":
		return nil, "", fmt.Errorf("certificate %s is not a device certificate: %w", serial, registry.ErrNotRenewable)
	case rec.Status == registry.CertRevoked:
		return nil, rec.DeviceID, fmt.Errorf("certificate %s is revoked: %w", serial, registry.ErrNotRenewable)
	}
	if dev == nil {
		return nil, rec.DeviceID, fmt.Errorf("look up device %s: %w", rec.DeviceID, registry.ErrNotFound)
	}
	if dev.Status != registry.DeviceActive {
		return nil, dev.ID, fmt.Errorf("device %s is %s: %w", dev.ID, dev.Status, registry.ErrDeviceNotActive)
	}
	if req.Tenant != "" {
		t, err := s.tenant(ctx, dev.TenantID)
		if err != nil {
			return nil, dev.ID, err
		}
		if t.Name != req.Tenant {
			return nil, dev.ID, fmt.Errorf("%w: device %s is in tenant %q, the request was sent to tenant %q",
				ErrForbidden, dev.ID, t.Name, req.Tenant)
		}
	}
	pub := req.Peer.PublicKey
	if len(req.CSRPEM) > 0 {
		csr, err := pki.ParseCSRPEM(req.CSRPEM)
		if err != nil {
			return nil, dev.ID, err
		}
		if pki.RepeatsIdentity(csr, req.Peer) {
			// An EST client re-enrolls with the subject and subjectAltName
			// of the certificate it renews (RFC 7030 §4.2.2): that is the
			// device's identity already; only the key is new.
			if pub, err = s.cfg.Policy.CheckKey(csr); err != nil {
				return nil, dev.ID, err
			}
		} else {
			claims, err := s.cfg.Policy.Check(csr)
			if err != nil {
				return nil, dev.ID, err
			}
			if !registry.SameSerial(claims.Serial, dev.Serial) || !sameMACs(claims.MACs, dev.MACs) {
				return nil, dev.ID, fmt.Errorf("%w: the CSR names serial %q MACs %v, the device is %q %v",
					pki.ErrBadCSR, claims.Serial, claims.MACs, dev.Serial, dev.MACs)
			}
			pub = claims.PublicKey
		}
	}
	sameKey := keysEqual(pub, req.Peer.PublicKey)
	attested := false // the new key is certified by the device's AK
	if !sameKey {
		if attested, err = checkRekeyAttestation(dev, req, pub); err != nil {
			return nil, dev.ID, err
		}
	}
	if rec.Status == registry.CertSuperseded {
		if rep, err := s.replay(ctx, serial, pub); err == nil {
			return rep, dev.ID, nil
		}
		return nil, dev.ID, fmt.Errorf("certificate %s was already renewed; renew with the newer one: %w", serial, registry.ErrNotRenewable)
	}
	if dev.RekeyRequired && sameKey {
		return nil, dev.ID, fmt.Errorf("device %s must renew with a new key: %w", dev.ID, registry.ErrRekeyRequired)
	}
	tenant, err := s.tenant(ctx, dev.TenantID)
	if err != nil {
		return nil, dev.ID, err
	}
	if err := s.cfg.TenantLimit.Allow(tenant.ID, tenant.Name, s.cfg.Now()); err != nil {
		return nil, dev.ID, err
	}
	// The tenant's key types apply to the key being certified; its
	// methods were decided at enrollment.
	if err := tenantAdmits(tenant, "", pub); err != nil {
		return nil, dev.ID, err
	}
	id := pki.Identity{
		DeviceID: dev.ID, Tenant: tenant.Name, Serial: dev.Serial, MACs: dev.MACs, TrustDomain: s.cfg.TrustDomain,
	}
	if sameKey || attested {
		// The TPM-attested key, or a new key certified by the same TPM's AK,
		// keeps the EK identity; a new key that was not attested does not
		// claim one.
		id.EKHash = dev.EKHash
	}
	if err := s.ready(ctx); err != nil {
		return nil, dev.ID, err
	}
	dreq := &pki.DeviceRequest{
		Identity:  id,
		PublicKey: pub,
		Lifetime:  s.certLifetime(tenant),
		Profile:   s.cfg.Profile,
	}
	if sameKey {
		// The renewed certificate is this CA's, for this very key (its
		// record holds exactly its DER): its key identifier is the key's.
		dreq.SubjectKeyID = req.Peer.SubjectKeyId
	}
	issued, err := s.cfg.Issuer.IssueDevice(ctx, dreq)
	if err != nil {
		return nil, dev.ID, fmt.Errorf("sign renewal of %s: %w", dev.ID, err)
	}
	now := s.cfg.Now()
	cert := issued.Certificate
	newRec := CertificateRecord(cert, registry.KindDevice, tenant.ID, dev.ID, now)
	action := ActionRenew
	if !sameKey {
		action = ActionRekey
	}
	err = s.cfg.Store.Renew(ctx, &registry.Renewal{
		OldSerial:   serial,
		SameKey:     sameKey,
		Certificate: newRec,
		Audit: event(Actor{Kind: ActorDevice, ID: dev.ID, TenantID: tenant.ID, Source: req.SourceAddr}, tenant.ID, action, dev.ID,
			registry.ResultOK, fmt.Sprintf("cert=%s replaces=%s", newRec.Serial, serial)),
	})
	if err != nil {
		return nil, dev.ID, fmt.Errorf("record renewal of %s: %w", dev.ID, err)
	}
	return &Result{DeviceID: dev.ID, Certificate: cert, Chain: issued.Chain, RenewAfter: RenewAfter(cert)}, dev.ID, nil
}

// recordVouches authenticates an unverified client certificate by the
// registry (RenewRequest.Unverified): rec, the record of its serial (or
// lookupErr), must hold exactly its DER, and it must be valid for client
// authentication now. A store that cannot answer is left to the caller.
func (s *Service) recordVouches(peer *x509.Certificate, rec *registry.Certificate, lookupErr error) error {
	switch {
	case lookupErr != nil && !errors.Is(lookupErr, registry.ErrNotFound):
		return nil
	case lookupErr != nil || !bytes.Equal(rec.DER, peer.Raw):
		return fmt.Errorf("the client certificate (serial %s, issuer %q) was not issued by this CA: %w",
			peer.SerialNumber.Text(16), peer.Issuer, ErrUnauthenticated)
	}
	if now := s.cfg.Now(); now.Before(peer.NotBefore) || now.After(peer.NotAfter) {
		return fmt.Errorf("the client certificate %s is valid from %s to %s, not now (%s): %w", rec.Serial,
			peer.NotBefore.UTC().Format(time.RFC3339), peer.NotAfter.UTC().Format(time.RFC3339),
			now.UTC().Format(time.RFC3339), ErrUnauthenticated)
	}
	if !pki.AllowsUsage(peer, x509.ExtKeyUsageClientAuth) {
		return fmt.Errorf("the client certificate %s is not for client authentication: %w", rec.Serial, ErrUnauthenticated)
	}
	return nil
}

// checkRekeyAttestation decides whether dev may re-key to pub. A device that
// is not TPM-attested may (false, nil). A TPM-attested one must prove pub is
// a key of the same TPM: certified by its recorded AK over
// RekeyExtraData(req.Peer) (true, nil).
func checkRekeyAttestation(dev *registry.Device, req *RenewRequest, pub crypto.PublicKey) (bool, error) {
	if dev.Method != MethodTPM && len(dev.AKPub) == 0 {
		return false, nil
	}
	if len(dev.AKPub) == 0 {
		return false, fmt.Errorf("%w: device %s was enrolled by TPM attestation before its attestation key was recorded: "+
			"re-enroll by attestation (the same EK keeps the device id), then re-key", ErrTPMCertifyRequired, dev.ID)
	}
	if req.Certify == nil {
		return false, fmt.Errorf("%w: this device's key is TPM-attested: a new key must be created and certified by the same TPM "+
			"(enroll rekey on the device)", ErrTPMCertifyRequired)
	}
	akPub, err := x509.ParsePKIXPublicKey(dev.AKPub)
	if err != nil {
		return false, fmt.Errorf("read the attestation key of device %s: %w", dev.ID, err)
	}
	if err := verify.VerifyCertification(akPub, *req.Certify, RekeyExtraData(req.Peer), pub); err != nil {
		return false, fmt.Errorf("re-key of device %s (EK %s): %w", dev.ID, dev.EKHash, err)
	}
	return true, nil
}

// replay returns the certificate that already renewed serial when it holds
// pub and is still active.
func (s *Service) replay(ctx context.Context, serial string, pub crypto.PublicKey) (*Result, error) {
	rep, err := s.cfg.Store.GetReplacement(ctx, serial)
	if err != nil {
		return nil, err
	}
	if rep.Status != registry.CertActive {
		return nil, registry.ErrNotRenewable
	}
	c, err := x509.ParseCertificate(rep.DER)
	if err != nil {
		return nil, err
	}
	if !keysEqual(c.PublicKey, pub) {
		return nil, registry.ErrNotRenewable
	}
	return &Result{DeviceID: rep.DeviceID, Certificate: c, Chain: s.chain(), RenewAfter: RenewAfter(c)}, nil
}

func keysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

func sameMACs(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
