package api

import (
	"net/http"

	"github.com/labstack/echo/v4"
	"github.com/smallstep/go-attestation/attest"

	"devpki/api/wire"
	"devpki/pkg/provision"
)

// routesRenewExpired adds the renewal of an expired certificate: a
// challenge, then its answer signed with the certificate's key. Both are
// one rate-limited door; a wrong proof counts as a failed authentication.
// The mutual-TLS door (/v1/renew) keeps refusing expired certificates.
func (s *Server) routesRenewExpired(e *echo.Echo) {
	e.POST("/v1/renew/expired/challenge", s.renewExpiredChallenge, s.door("renew-expired"),
		s.auditRefusals(provision.ActionRenewExpiredChallenge))
	e.POST("/v1/renew/expired", s.renewExpired, s.door("renew-expired"), s.auditRefusals(provision.ActionRenewExpired))
}

// renewExpiredChallenge is POST /v1/renew/expired/challenge.
func (s *Server) renewExpiredChallenge(c echo.Context) error {
	var req wire.ExpiredChallengeRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	ch, err := s.cfg.Provision.RenewExpiredChallenge(c.Request().Context(), &provision.ExpiredChallengeRequest{
		CertPEM: []byte(req.Certificate), SourceAddr: c.RealIP(),
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, &wire.ExpiredChallengeResponse{ChallengeID: ch.ID, Nonce: ch.Nonce, Expires: ch.Expires.UTC()})
}

// renewExpired is POST /v1/renew/expired: the answer to a challenge.
func (s *Server) renewExpired(c echo.Context) error {
	var req wire.RenewExpiredRequest
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
	res, err := s.cfg.Provision.RenewExpired(c.Request().Context(), &provision.RenewExpiredRequest{
		ChallengeID: req.ChallengeID, CertPEM: []byte(req.Certificate), Signature: req.Signature,
		CSRPEM: []byte(req.CSR), Certify: certify, SourceAddr: c.RealIP(),
	})
	if err != nil {
		return err
	}
	return s.issued(c, res)
}
