package api

import (
	"github.com/labstack/echo/v4"
	"github.com/smallstep/go-attestation/attest"

	"devpki/api/wire"
	"devpki/pkg/provision"
)

func (s *Server) routesRenew(e *echo.Echo) {
	e.POST("/v1/renew", s.renew, s.door("renew"), s.auditRefusals(provision.ActionRenew))
}

// renew is POST /v1/renew: the device's current certificate over mTLS is the
// only credential; an empty body renews its key, {"csr": PEM} re-keys. A
// TPM-attested device re-keys with {"csr", "certify"}: the certification of
// the new key by its AK over the SHA-256 of the presented certificate's DER
// (403 tpm-certify-required without it, tpm-certify-invalid when it fails).
func (s *Server) renew(c echo.Context) error {
	r := c.Request()
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		if err := s.expiredPeer(r.TLS); err != nil {
			return err
		}
		_, err := s.cfg.Provision.Renew(r.Context(), &provision.RenewRequest{SourceAddr: c.RealIP()})
		return err
	}
	var req wire.RenewRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	var certify *attest.CertificationParameters
	if req.Certify != nil {
		certify = &attest.CertificationParameters{
			Public:            req.Certify.Public,
			CreateData:        req.Certify.CreateData,
			CreateAttestation: req.Certify.CreateAttestation,
			CreateSignature:   req.Certify.CreateSignature,
		}
	}
	res, err := s.cfg.Provision.Renew(r.Context(), &provision.RenewRequest{
		Peer:       r.TLS.VerifiedChains[0][0],
		CSRPEM:     []byte(req.CSR),
		Certify:    certify,
		SourceAddr: c.RealIP(),
	})
	if err != nil {
		return err
	}
	return s.issued(c, res)
}
