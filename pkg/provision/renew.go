package provision

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"

	"devpki/pkg/pki"
	"devpki/pkg/registry"
)

// RenewRequest is a renewal as the API received it: the verified client
// certificate is the only credential.
type RenewRequest struct {
	// Peer is the client certificate, already verified to this CA's root.
	Peer *x509.Certificate
	// CSRPEM, when set, re-keys: a CSR for the same serial and MACs.
	CSRPEM []byte
	// SourceAddr is the client address, for the audit log.
	SourceAddr string
}

// Renew issues a new certificate for the device that owns req.Peer: same key,
// or the CSR's new key. It is refused (and audited) for an unknown, revoked
// or superseded certificate, a device that is not active, and — after an
// admin's rotate — the old key (registry.ErrRekeyRequired). A renewal whose
// answer was lost may be sent again: if the presented certificate was
// already renewed with the same key, that renewal's certificate is returned.
func (s *Service) Renew(ctx context.Context, req *RenewRequest) (*Result, error) {
	res, target, err := s.renew(ctx, req)
	if err != nil {
		// Refusals land in the device's tenant's log when the CA knows it.
		serial := req.Peer.SerialNumber.Text(16)
		tenantID := ""
		if rec, rerr := s.cfg.Store.GetCertificate(ctx, serial); rerr == nil {
			tenantID = rec.TenantID
		}
		s.refuse(ctx, &Request{SourceAddr: req.SourceAddr}, tenantID, "cert:"+serial, target, "renew", err)
		return nil, err
	}
	return res, nil
}

func (s *Service) renew(ctx context.Context, req *RenewRequest) (*Result, string, error) {
	serial := req.Peer.SerialNumber.Text(16)
	rec, err := s.cfg.Store.GetCertificate(ctx, serial)
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
	dev, err := s.cfg.Store.GetDevice(ctx, rec.DeviceID)
	if err != nil {
		return nil, rec.DeviceID, fmt.Errorf("look up device %s: %w", rec.DeviceID, err)
	}
	if dev.Status != registry.DeviceActive {
		return nil, dev.ID, fmt.Errorf("device %s is %s: %w", dev.ID, dev.Status, registry.ErrDeviceNotActive)
	}
	pub := req.Peer.PublicKey
	if len(req.CSRPEM) > 0 {
		csr, err := pki.ParseCSRPEM(req.CSRPEM)
		if err != nil {
			return nil, dev.ID, err
		}
		claims, err := s.cfg.Policy.Check(csr)
		if err != nil {
			return nil, dev.ID, err
		}
		if claims.Serial != dev.Serial || !sameMACs(claims.MACs, dev.MACs) {
			return nil, dev.ID, fmt.Errorf("%w: the CSR names serial %q MACs %v, the device is %q %v",
				pki.ErrBadCSR, claims.Serial, claims.MACs, dev.Serial, dev.MACs)
		}
		pub = claims.PublicKey
	}
	sameKey := keysEqual(pub, req.Peer.PublicKey)
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
	id := pki.Identity{
		DeviceID: dev.ID, Tenant: tenant.Name, Serial: dev.Serial, MACs: dev.MACs, TrustDomain: s.cfg.TrustDomain,
	}
	if sameKey {
		// The TPM-attested key keeps its EK identity; a new key from a CSR
		// was not attested, so its certificate does not claim one.
		id.EKHash = dev.EKHash
	}
	issued, err := s.cfg.Issuer.IssueDevice(ctx, &pki.DeviceRequest{
		Identity:  id,
		PublicKey: pub,
		Lifetime:  s.cfg.Lifetime,
	})
	if err != nil {
		return nil, dev.ID, fmt.Errorf("sign renewal of %s: %w", dev.ID, err)
	}
	now := s.cfg.Now()
	cert := issued.Certificate
	newRec := CertificateRecord(cert, registry.KindDevice, tenant.ID, dev.ID, now)
	action := "renew"
	if !sameKey {
		action = "rekey"
	}
	err = s.cfg.Store.Renew(ctx, &registry.Renewal{
		OldSerial:   serial,
		SameKey:     sameKey,
		Certificate: newRec,
		Audit: &registry.AuditEvent{
			TenantID: tenant.ID, Actor: "device:" + dev.ID, Action: action, Target: dev.ID, Result: registry.ResultOK,
			Detail: fmt.Sprintf("cert=%s replaces=%s", newRec.Serial, serial), SourceAddr: req.SourceAddr,
		},
	})
	if err != nil {
		return nil, dev.ID, fmt.Errorf("record renewal of %s: %w", dev.ID, err)
	}
	return &Result{DeviceID: dev.ID, Certificate: cert, Chain: issued.Chain, RenewAfter: RenewAfter(cert)}, dev.ID, nil
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
