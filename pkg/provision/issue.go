package provision

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/registry"
)

// ComponentIssuer is the optional ability of an Issuer to sign certificates
// for the fleet's other components (brokers, ingest services), found by type
// assertion. *pki.Issuer has it.
type ComponentIssuer interface {
	IssueServer(ctx context.Context, req *pki.ServerRequest) (*pki.Issued, error)
	IssueClient(ctx context.Context, req *pki.ClientRequest) (*pki.Issued, error)
}

// ComponentRequest asks for a server or client certificate from a CSR. Only
// the CSR's public key is used: names come from the request, never from the
// CSR's extensions.
type ComponentRequest struct {
	CSRPEM     []byte
	Server     bool // serverAuth (+clientAuth); false: clientAuth only
	CommonName string
	DNSNames   []string
	IPs        []string
	Lifetime   time.Duration // zero: pki.DefaultLeafLifetime; at most 8760h
	// Who asks: the certificate is recorded in Who's tenant, and the
	// issuance audited as Who's.
	Who Actor
}

// IssueComponent checks req, signs, and records the certificate with an
// audit event before returning it.
func (s *Service) IssueComponent(ctx context.Context, req *ComponentRequest) (*Result, error) {
	iss, ok := s.cfg.Issuer.(ComponentIssuer)
	if !ok {
		return nil, fmt.Errorf("issuer %T cannot sign component certificates", s.cfg.Issuer)
	}
	csr, err := pki.ParseCSRPEM(req.CSRPEM)
	if err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature does not verify: %v", pki.ErrBadCSR, err)
	}
	// Components may use ECDSA P-256 or P-384, or RSA; pki decides the rest.
	if err := (pki.KeyPolicy{AllowP384: true, AllowRSA: true}).Check(csr.PublicKey); err != nil {
		return nil, err
	}
	if req.Lifetime == 0 {
		req.Lifetime = pki.DefaultLeafLifetime
	}
	if req.Lifetime < time.Hour || req.Lifetime > 8760*time.Hour {
		return nil, fmt.Errorf("%w: lifetime %s out of range [1h, 8760h]", ErrInvalidArgument, req.Lifetime)
	}
	var ips []net.IP
	for _, s := range req.IPs {
		ip := net.ParseIP(strings.TrimSpace(s))
		if ip == nil {
			return nil, fmt.Errorf("%w: %q is not an IP address", ErrInvalidArgument, s)
		}
		ips = append(ips, ip)
	}
	// pki's rules for what a certificate may name, checked here so that a
	// refusal is the caller's error (400), not a failed signature.
	for _, d := range req.DNSNames {
		if err := pki.ValidateDNSName(d); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
		}
	}
	if req.CommonName != "" {
		if err := pki.ValidateSubjectValue(req.CommonName); err != nil {
			return nil, fmt.Errorf("%w: common name: %v", ErrInvalidArgument, err)
		}
	}
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	var issued *pki.Issued
	kind := registry.KindClient
	if req.Server {
		if len(req.DNSNames) == 0 && len(ips) == 0 {
			return nil, fmt.Errorf("%w: a server certificate needs at least one DNS name or IP", ErrInvalidArgument)
		}
		kind = registry.KindServer
		issued, err = iss.IssueServer(ctx, &pki.ServerRequest{
			PublicKey: csr.PublicKey, CommonName: req.CommonName, DNSNames: req.DNSNames, IPs: ips, Lifetime: req.Lifetime,
		})
	} else {
		if req.CommonName == "" {
			return nil, fmt.Errorf("%w: a client certificate needs a common name", ErrInvalidArgument)
		}
		tenant, terr := s.tenant(ctx, req.Who.TenantID)
		if terr != nil {
			return nil, terr
		}
		id, uerr := pki.ComponentURI(s.cfg.TrustDomain, tenant.Name, req.CommonName)
		if uerr != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, uerr)
		}
		uris := []*url.URL{id}
		issued, err = iss.IssueClient(ctx, &pki.ClientRequest{
			PublicKey: csr.PublicKey, CommonName: req.CommonName, Organization: tenant.Name, URIs: uris, Lifetime: req.Lifetime,
		})
	}
	if err != nil {
		return nil, fmt.Errorf("sign component certificate: %w", err)
	}
	rec := CertificateRecord(issued.Certificate, kind, req.Who.TenantID, "", s.cfg.Now())
	if err := s.cfg.Store.RecordCertificate(ctx, rec, event(req.Who, req.Who.TenantID, ActionCertIssue, rec.Serial, registry.ResultOK,
		fmt.Sprintf("kind=%s subject=%s sans=%v", kind, rec.Subject, rec.SANs))); err != nil {
		return nil, fmt.Errorf("record certificate: %w", err)
	}
	return &Result{Certificate: issued.Certificate, Chain: issued.Chain}, nil
}
