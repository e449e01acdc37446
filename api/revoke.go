package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// routesRevoke adds the admin revocation routes (role admin only).
func (s *Server) routesRevoke(g *echo.Group) {
	g.POST("/certificates/:serial/revoke", s.revokeCertificate, s.requireRole(registry.RoleAdmin))
	g.POST("/devices/:id/revoke", s.revokeDevice, s.requireRole(registry.RoleAdmin))
}

// revokeBody is RevokeRequest as the server reads it: the reason may be a
// name or a code, as a JSON string or number.
type revokeBody struct {
	Reason json.RawMessage `json:"reason"`
}

// revokeReason reads the body's reason. An empty body means unspecified.
func revokeReason(c echo.Context) (int, error) {
	var b revokeBody
	if c.Request().ContentLength != 0 {
		if err := decodeJSON(c, &b); err != nil {
			return 0, err
		}
	}
	raw := bytes.TrimSpace(b.Reason)
	var s string
	switch {
	case len(raw) == 0 || string(raw) == "null":
	case raw[0] == '"':
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, problem(http.StatusBadRequest, wire.SlugBadRequest, "Malformed JSON body", err.Error())
		}
	default:
		s = string(raw) // a JSON number, parsed as a code below
	}
	code, err := registry.ParseReason(s)
	if err != nil {
		return 0, err
	}
	return code, nil
}

// revokeError turns what a revocation may refuse with into problems; other
// errors (ErrNotFound → 404, internal) go to the error handler as they are.
func revokeError(err error) error {
	var ire *registry.InvalidReasonError
	switch {
	case errors.As(err, &ire):
		return problem(http.StatusBadRequest, wire.SlugBadReason, "Invalid revocation reason", ire.Error())
	case errors.Is(err, provision.ErrForbidden):
		return problem(http.StatusForbidden, wire.SlugForbidden, "Forbidden", err.Error())
	}
	return err
}

func (s *Server) actor(c echo.Context) provision.Actor {
	adm := adminFrom(c)
	return provision.AdminActor(adm.Name, adm.TenantID, c.RealIP())
}

// revokeCertificate is POST /v1/admin/certificates/{serial}/revoke.
func (s *Server) revokeCertificate(c echo.Context) error {
	if s.cfg.Revocation == nil {
		return problem(http.StatusNotImplemented, wire.SlugNotImplemented, "Revocation not configured", "this CA serves no CRL or OCSP")
	}
	// Accept the serial as openssl prints it (colons, upper case, 0x).
	raw := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(c.Param("serial"), "0x"), ":", ""))
	sn, err := pki.ParseSerial(raw)
	if err != nil {
		return problem(http.StatusBadRequest, wire.SlugBadRequest, "Invalid serial", err.Error())
	}
	reason, err := revokeReason(c)
	if err != nil {
		return s.refuseRevoke(c, "cert.revoke", c.Param("serial"), err)
	}
	res, err := s.cfg.Revocation.RevokeCertificate(c.Request().Context(), s.actor(c), pki.SerialHex(sn), reason)
	if err != nil {
		return revokeError(err)
	}
	out := revokeResponse(res)
	out.Serial = pki.SerialHex(sn)
	return c.JSON(http.StatusOK, out)
}

// revokeDevice is POST /v1/admin/devices/{id}/revoke.
func (s *Server) revokeDevice(c echo.Context) error {
	if s.cfg.Revocation == nil {
		return problem(http.StatusNotImplemented, wire.SlugNotImplemented, "Revocation not configured", "this CA serves no CRL or OCSP")
	}
	id := c.Param("id")
	reason, err := revokeReason(c)
	if err != nil {
		return s.refuseRevoke(c, "device.revoke", id, err)
	}
	res, err := s.cfg.Revocation.RevokeDevice(c.Request().Context(), s.actor(c), id, reason)
	if err != nil {
		return revokeError(err)
	}
	out := revokeResponse(res)
	out.DeviceID = id
	return c.JSON(http.StatusOK, out)
}

// refuseRevoke audits a request refused before it reached the Revocation
// (an unreadable body or reason) and returns the problem.
func (s *Server) refuseRevoke(c echo.Context, action, target string, err error) error {
	a := s.actor(c)
	s.audit(c.Request().Context(), &registry.AuditEvent{
		TenantID: a.TenantID, Actor: a.String(), Action: action, Target: target,
		Result: registry.ResultDenied, Detail: err.Error(), SourceAddr: a.Source,
	})
	return revokeError(err)
}

func revokeResponse(res *provision.RevokeResult) *wire.RevokeResponse {
	out := &wire.RevokeResponse{
		AlreadyRevoked: res.AlreadyRevoked, CRLNumber: res.CRLNumber,
		Certificates: make([]wire.RevokedCertificate, 0, len(res.Certificates)),
	}
	for _, rc := range res.Certificates {
		r := wire.RevokedCertificate{
			Serial: rc.Serial, DeviceID: rc.DeviceID,
			Reason: registry.ReasonName(rc.RevocationReason), ReasonCode: rc.RevocationReason,
		}
		if rc.RevokedAt != nil {
			r.RevokedAt = *rc.RevokedAt
		}
		out.Certificates = append(out.Certificates, r)
	}
	return out
}
