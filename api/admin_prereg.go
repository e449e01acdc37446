package api

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/registry"
	"devpki/pkg/tpm/verify"
)

// routesPrereg adds TPM EK pre-registration (operators and admins) and the
// TPM manufacturer roots (admins add, every role reads).
func (s *Server) routesPrereg(g *echo.Group) {
	g.POST("/preregistrations", s.preregister, s.requireRole(registry.RoleAdmin, registry.RoleOperator))
	g.POST("/tpm/roots", s.addTPMRoot, s.requireRole(registry.RoleAdmin))
	g.GET("/tpm/roots", s.listTPMRoots, s.requireRole(registry.RoleAdmin, registry.RoleOperator, registry.RoleAuditor))
}

// addTPMRoot is POST /v1/admin/tpm/roots: one self-signed CA certificate.
func (s *Server) addTPMRoot(c echo.Context) error {
	adm := adminFrom(c)
	var req wire.AddTPMRootRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	b, rest := pem.Decode([]byte(req.PEM))
	if b == nil || b.Type != "CERTIFICATE" || len(strings.TrimSpace(string(rest))) != 0 {
		return badArg("pem must hold exactly one CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return badArg("certificate: %v", err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return badArg("%s is not a CA certificate", cert.Subject)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		return badArg("%s is not a self-signed root: %v", cert.Subject, err)
	}
	root := &registry.TPMRoot{Fingerprint: pki.Fingerprint(cert), DER: cert.Raw, Subject: cert.Subject.String(), AddedBy: "admin:" + adm.Name}
	err = s.cfg.Store.PutTPMRoot(c.Request().Context(), root, &registry.AuditEvent{
		TenantID: adm.TenantID, Actor: "admin:" + adm.Name, Action: "tpm.root.add", Target: root.Fingerprint,
		Result: registry.ResultOK, Detail: root.Subject, SourceAddr: c.RealIP(),
	})
	if errors.Is(err, registry.ErrAlreadyExists) {
		return problem(http.StatusConflict, wire.SlugConflict, "Already added", fmt.Sprintf("root %s is already trusted", root.Fingerprint))
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, tpmRootView(root))
}

func (s *Server) listTPMRoots(c echo.Context) error {
	roots, err := s.cfg.Store.ListTPMRoots(c.Request().Context())
	if err != nil {
		return err
	}
	out := make([]wire.TPMRoot, 0, len(roots))
	for _, r := range roots {
		out = append(out, tpmRootView(r))
	}
	return c.JSON(http.StatusOK, out)
}

func tpmRootView(r *registry.TPMRoot) wire.TPMRoot {
	return wire.TPMRoot{Fingerprint: r.Fingerprint, Subject: r.Subject, AddedBy: r.AddedBy, CreatedAt: r.CreatedAt}
}

// preregister is POST /v1/admin/preregistrations.
func (s *Server) preregister(c echo.Context) error {
	adm := adminFrom(c)
	var req wire.PreregisterRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if err := pki.ValidateSerial(req.Serial); err != nil {
		return badArg("serial %q: %v", req.Serial, err)
	}
	macs := make([]string, 0, len(req.MACs))
	for _, m := range req.MACs {
		n, err := pki.NormalizeMAC(m)
		if err != nil {
			return badArg("mac %q: %v", m, err)
		}
		macs = append(macs, n)
	}
	pub, err := parseEKPub(req.EKPub)
	if err != nil {
		return badArg("ek_pub: %v", err)
	}
	hash, err := verify.EKHash(pub)
	if err != nil {
		return badArg("ek_pub: %v", err)
	}
	err = s.cfg.Store.PutPreregistration(c.Request().Context(), &registry.Preregistration{
		EKHash: hash, TenantID: adm.TenantID, Serial: req.Serial, MACs: macs, CreatedBy: "admin:" + adm.Name,
	}, &registry.AuditEvent{
		TenantID: adm.TenantID, Actor: "admin:" + adm.Name, Action: "tpm.preregister", Target: req.Serial,
		Result: registry.ResultOK, Detail: "ek=" + hash, SourceAddr: c.RealIP(),
	})
	if errors.Is(err, registry.ErrAlreadyExists) {
		return problem(http.StatusConflict, wire.SlugConflict, "Already pre-registered", fmt.Sprintf("EK %s is already pre-registered", hash))
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, &wire.Preregistration{EKHash: hash, Serial: req.Serial, MACs: macs})
}

// parseEKPub reads an RSA EK public key given as PEM or base64 PKIX DER.
func parseEKPub(s string) (*rsa.PublicKey, error) {
	s = strings.TrimSpace(s)
	var der []byte
	if b, _ := pem.Decode([]byte(s)); b != nil {
		der = b.Bytes
	} else {
		var err error
		if der, err = base64.StdEncoding.DecodeString(s); err != nil {
			return nil, fmt.Errorf("neither PEM nor base64: %v", err)
		}
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, err
	}
	rsaPub, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%T: only RSA EKs are supported", pub)
	}
	if rsaPub.N.BitLen() < 2048 {
		return nil, fmt.Errorf("RSA key of %d bits, an EK has at least 2048", rsaPub.N.BitLen())
	}
	return rsaPub, nil
}
