package provision

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"devpki/pkg/pki"
	"devpki/pkg/registry"
	"devpki/pkg/tpm/verify"
)

// AddTPMRoot adds a TPM manufacturer CA certificate: pemBytes must hold
// exactly one CA certificate. A self-signed one is kept as a root, which EK
// certificates may then chain to; any other as an intermediate
// (registry.TPMIntermediate), which completes EK chains that lack it and
// adds no trust by itself. Both count at the next TPM challenge, on every
// replica, with no restart. A certificate already added is
// registry.ErrAlreadyExists; a bad certificate is ErrInvalidArgument; a
// tenant admin (not a super-admin) is ErrForbidden. Refusals change nothing
// and are audited.
func (a *Admin) AddTPMRoot(ctx context.Context, who Actor, pemBytes []byte) (*registry.TPMRoot, error) {
	if !who.Super && who.Kind == ActorAdmin {
		// A TPM root is trusted for every tenant's enrollments.
		return nil, a.refused(ctx, who, ActionTPMRootAdd, "",
			fmt.Errorf("only a super-admin may add TPM roots (they are trusted for every tenant): %w", ErrForbidden))
	}
	cert, kind, err := ParseTPMCA(pemBytes)
	if err != nil {
		return nil, a.refused(ctx, who, ActionTPMRootAdd, "", err)
	}
	root := &registry.TPMRoot{Fingerprint: pki.Fingerprint(cert), DER: cert.Raw, Subject: cert.Subject.String(), Kind: kind, AddedBy: who.String()}
	err = a.cfg.Store.PutTPMRoot(ctx, root, event(who, "", ActionTPMRootAdd, root.Fingerprint, registry.ResultOK,
		string(kind)+" "+root.Subject))
	if err != nil {
		if errors.Is(err, registry.ErrAlreadyExists) {
			err = fmt.Errorf("%s %s is already added: %w", kind, root.Fingerprint, err)
		}
		return nil, a.refused(ctx, who, ActionTPMRootAdd, root.Fingerprint, fmt.Errorf("add TPM %s: %w", kind, err))
	}
	return root, nil
}

// ParseTPMRoot reads a TPM manufacturer root: exactly one PEM CERTIFICATE
// block holding a self-signed CA certificate. Anything else is
// ErrInvalidArgument.
func ParseTPMRoot(pemBytes []byte) (*x509.Certificate, error) {
	cert, kind, err := ParseTPMCA(pemBytes)
	if err == nil && kind != registry.TPMRootCA {
		err = fmt.Errorf("%w: %s is not a self-signed root", ErrInvalidArgument, cert.Subject)
	}
	return cert, err
}

// ParseTPMCA reads a TPM manufacturer CA certificate: exactly one PEM
// CERTIFICATE block holding a CA certificate, a root when it is self-signed
// (its signature verifies with its own key), an intermediate otherwise.
// Anything else is ErrInvalidArgument.
func ParseTPMCA(pemBytes []byte) (*x509.Certificate, registry.TPMCAKind, error) {
	b, rest := pem.Decode(pemBytes)
	if b == nil || b.Type != "CERTIFICATE" || len(strings.TrimSpace(string(rest))) != 0 {
		return nil, "", fmt.Errorf("%w: pem must hold exactly one CERTIFICATE block", ErrInvalidArgument)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, "", fmt.Errorf("%w: certificate: %v", ErrInvalidArgument, err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, "", fmt.Errorf("%w: %s is not a CA certificate", ErrInvalidArgument, cert.Subject)
	}
	if bytes.Equal(cert.RawSubject, cert.RawIssuer) && cert.CheckSignatureFrom(cert) == nil {
		return cert, registry.TPMRootCA, nil
	}
	if bytes.Equal(cert.RawSubject, cert.RawIssuer) {
		return nil, "", fmt.Errorf("%w: %s names itself as issuer but is not self-signed", ErrInvalidArgument, cert.Subject)
	}
	return cert, registry.TPMIntermediate, nil
}

// PreregisterSpec is a TPM EK to bind to a device's serial (and MACs)
// before the device enrolls.
type PreregisterSpec struct {
	Serial string
	MACs   []string // any form pki.NormalizeMAC reads
	// EKPub is the RSA EK public key as PEM or base64 PKIX DER.
	EKPub string
}

// Preregister records spec in who's tenant, so that a TPM without an EK
// certificate can enroll by attestation, with that serial only. Bad input
// is ErrInvalidArgument; an EK already pre-registered is
// registry.ErrAlreadyExists. Refusals change nothing and are audited.
func (a *Admin) Preregister(ctx context.Context, who Actor, spec PreregisterSpec) (*registry.Preregistration, error) {
	p, err := preregistration(spec)
	if err != nil {
		return nil, a.refused(ctx, who, ActionTPMPreregister, spec.Serial, err)
	}
	p.TenantID, p.CreatedBy = who.TenantID, who.String()
	err = a.cfg.Store.PutPreregistration(ctx, p,
		event(who, p.TenantID, ActionTPMPreregister, p.Serial, registry.ResultOK, "ek="+p.EKHash))
	if err != nil {
		if errors.Is(err, registry.ErrAlreadyExists) {
			err = fmt.Errorf("EK %s is already pre-registered: %w", p.EKHash, err)
		}
		return nil, a.refused(ctx, who, ActionTPMPreregister, p.Serial, fmt.Errorf("pre-register: %w", err))
	}
	return p, nil
}

// preregistration checks spec and returns its record, without tenant.
func preregistration(spec PreregisterSpec) (*registry.Preregistration, error) {
	if err := pki.ValidateSerial(spec.Serial); err != nil {
		return nil, fmt.Errorf("%w: serial %q: %w", ErrInvalidArgument, spec.Serial, err)
	}
	macs, err := pki.NormalizeMACs(spec.MACs)
	if err != nil {
		return nil, fmt.Errorf("%w: mac: %w", ErrInvalidArgument, err)
	}
	pub, err := ParseEKPub(spec.EKPub)
	if err != nil {
		return nil, err
	}
	hash, err := verify.EKHash(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: ek_pub: %v", ErrInvalidArgument, err)
	}
	return &registry.Preregistration{EKHash: hash, Serial: spec.Serial, MACs: macs}, nil
}

// ParseEKPub reads an RSA EK public key of at least 2048 bits given as PEM
// or base64 PKIX DER. Anything else is ErrInvalidArgument.
func ParseEKPub(s string) (*rsa.PublicKey, error) {
	s = strings.TrimSpace(s)
	var der []byte
	if b, _ := pem.Decode([]byte(s)); b != nil {
		der = b.Bytes
	} else {
		var err error
		if der, err = base64.StdEncoding.DecodeString(s); err != nil {
			return nil, fmt.Errorf("%w: ek_pub: neither PEM nor base64: %v", ErrInvalidArgument, err)
		}
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: ek_pub: %v", ErrInvalidArgument, err)
	}
	rsaPub, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: ek_pub: %T: only RSA EKs are supported", ErrInvalidArgument, pub)
	}
	if rsaPub.N.BitLen() < 2048 {
		return nil, fmt.Errorf("%w: ek_pub: RSA key of %d bits, an EK has at least 2048", ErrInvalidArgument, rsaPub.N.BitLen())
	}
	return rsaPub, nil
}
