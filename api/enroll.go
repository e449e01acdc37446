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
	e.POST("/v1/enroll", s.enroll)
}

// enroll is POST /v1/enroll: bootstrap-token enrollment.
func (s *Server) enroll(c echo.Context) error {
	token, ok := bearer(c.Request())
	if !ok {
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="devpki enroll"`)
		return s.refuse(c, provision.Actor{}, provision.ActionEnroll, "",
			problem(http.StatusUnauthorized, wire.SlugTokenInvalid, "Bootstrap token required",
				"send the bootstrap token as 'Authorization: Bearer <token>'"))
	}
	var req wire.EnrollRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if req.CSR == "" {
		return problem(http.StatusBadRequest, wire.SlugBadCSR, "Certificate request refused", "the body has no \"csr\"")
	}
	res, err := s.cfg.Provision.Enroll(c.Request().Context(), s.cfg.Tokens, &provision.Request{
		Credential: token,
		CSRPEM:     []byte(req.CSR),
		SourceAddr: c.RealIP(),
	})
	if err != nil {
		return err
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
