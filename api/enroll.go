package api

import (
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"devpki/api/wire"
	"devpki/pkg/provision"
)

func (s *Server) routesEnroll(e *echo.Echo) {
	e.POST("/v1/enroll", s.enroll, s.door("enroll"), s.auditRefusals(provision.ActionEnroll))
}

// enroll is POST /v1/enroll: bootstrap-token enrollment (Attestors.Token),
// or, without a bearer token, factory IDevID enrollment (Attestors.IDevID)
// when the client presented a certificate that is not this CA's (verifyPeer
// left it unverified). Without either the request is refused by provision
// (audited) before the body is read.
func (s *Server) enroll(c echo.Context) error {
	ctx := c.Request().Context()
	token, ok := bearer(c.Request())
	if r := c.Request(); !ok && s.cfg.Attestors.IDevID != nil && r.TLS != nil &&
		len(r.TLS.PeerCertificates) > 0 && len(r.TLS.VerifiedChains) == 0 {
		return s.enrollIDevID(c)
	}
	if !ok {
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="devpki enroll"`)
		_, err := s.cfg.Provision.Enroll(ctx, s.cfg.Attestors.Token, &provision.Request{SourceAddr: c.RealIP()})
		return err
	}
	var req wire.EnrollRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	res, err := s.cfg.Provision.Enroll(ctx, s.cfg.Attestors.Token, &provision.Request{
		Credential: token,
		CSRPEM:     []byte(req.CSR),
		SourceAddr: c.RealIP(),
	})
	if err != nil {
		return err
	}
	return s.issued(c, res)
}

// issued answers 201 with an issued certificate (native JSON), noting its
// tenant for the access log.
func (s *Server) issued(c echo.Context, res *provision.Result) error {
	if o := res.Certificate.Subject.Organization; len(o) > 0 {
		setTenant(c, o[0])
	}
	return c.JSON(http.StatusCreated, enrollResponse(res, s.trust().chainOf(res.Certificate)))
}

// enrollIDevID is POST /v1/enroll with a factory IDevID as the client
// certificate: the presented certificates go to Attestors.IDevID.
func (s *Server) enrollIDevID(c echo.Context) error {
	var req wire.EnrollRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	r := c.Request()
	res, err := s.cfg.Provision.Enroll(r.Context(), s.cfg.Attestors.IDevID, &provision.Request{
		CSRPEM:     []byte(req.CSR),
		PeerCerts:  r.TLS.PeerCertificates,
		SourceAddr: c.RealIP(),
	})
	if err != nil {
		return err
	}
	return s.issued(c, res)
}

func enrollResponse(res *provision.Result, chain []string) *wire.EnrollResponse {
	return &wire.EnrollResponse{
		DeviceID:    res.DeviceID,
		Certificate: string(pemCert(res.Certificate)),
		Chain:       chain,
		RenewAfter:  res.RenewAfter,
	}
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const p = "Bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return "", false
	}
	return strings.TrimSpace(h[len(p):]), true
}
