package api

import (
	"encoding/pem"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"devpki/api/wire"
	"devpki/pkg/provision"
)

func (s *Server) routesEnroll(e *echo.Echo) {
	e.POST("/v1/enroll", s.enroll, s.door("enroll"), s.auditRefusals(provision.ActionEnroll))
}

// enroll is POST /v1/enroll: bootstrap-token enrollment (Attestors.Token).
// Without a bearer token the request is refused by provision (audited)
// before the body is read.
func (s *Server) enroll(c echo.Context) error {
	ctx := c.Request().Context()
	token, ok := bearer(c.Request())
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
	return c.JSON(http.StatusCreated, enrollResponse(res, s.chainList))
}

func enrollResponse(res *provision.Result, chain []string) *wire.EnrollResponse {
	return &wire.EnrollResponse{
		DeviceID:    res.DeviceID,
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: res.Certificate.Raw})),
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
