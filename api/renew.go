package api

import (
	"github.com/labstack/echo/v4"

	"devpki/api/wire"
	"devpki/pkg/provision"
)

// renewPath is the native renewal route; verifyPeer leaves its client
// certificate to provision.Renew.
const renewPath = "/v1/renew"

func (s *Server) routesRenew(e *echo.Echo) {
	e.POST(renewPath, s.renew, s.door("renew"), s.auditRefusals(provision.ActionRenew))
}

// renew is POST /v1/renew: the device's current certificate over mTLS is the
// only credential; an empty body renews its key, {"csr": PEM} re-keys. A
// TPM-attested device re-keys with {"csr", "certify"}: the certification of
// the new key by its AK over the SHA-256 of the presented certificate's DER
// (403 tpm-certify-required without it, tpm-certify-invalid when it fails).
//
// The presented certificate's chain is not verified here (verifyPeer skips
// this route): provision.Renew authenticates it by its registry record
// (RenewRequest.Unverified), which the renewal reads anyway.
func (s *Server) renew(c echo.Context) error {
	r := c.Request()
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		_, err := s.cfg.Provision.Renew(r.Context(), &provision.RenewRequest{SourceAddr: c.RealIP()})
		return err
	}
	if err := s.expiredPeer(r.TLS); err != nil {
		return err
	}
	peer, unverified := r.TLS.PeerCertificates[0], true
	if len(r.TLS.VerifiedChains) > 0 {
		peer, unverified = r.TLS.VerifiedChains[0][0], false
	}
	var req wire.RenewRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	res, err := s.cfg.Provision.Renew(r.Context(), &provision.RenewRequest{
		Peer:       peer,
		Unverified: unverified,
		CSRPEM:     []byte(req.CSR),
		Certify:    certification(req.Certify),
		SourceAddr: c.RealIP(),
	})
	if err != nil {
		return err
	}
	return s.issued(c, res) // which names the tenant for the access log (the chain was not verified here)
}
