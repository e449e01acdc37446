package api

import (
	"bytes"
	"encoding/json"
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

// revokeCertificate is POST /v1/admin/certificates/{serial}/revoke.
func (s *Server) revokeCertificate(c echo.Context) error {
	if s.cfg.Revocation == nil {
		return problem(http.StatusNotImplemented, wire.SlugNotImplemented, "Revocation not configured", "this CA serves no CRL or OCSP")
	}
	// Accept the serial as openssl prints it (colons, upper case, 0x).
	raw := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(c.Param("serial"), "0x"), ":", ""))
	sn, err := pki.ParseSerial(raw)
	if err != nil {
		return badArg("serial %q: %v", c.Param("serial"), err)
	}
	reason, err := revokeReason(c)
	if err != nil {
		return s.refuse(c, s.actor(c), provision.ActionCertRevoke, c.Param("serial"), err)
	}
	res, err := s.cfg.Revocation.RevokeCertificate(c.Request().Context(), s.actor(c), pki.SerialHex(sn), reason)
	if err != nil {
		return err
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
		return s.refuse(c, s.actor(c), provision.ActionDeviceRevoke, id, err)
	}
	res, err := s.cfg.Revocation.RevokeDevice(c.Request().Context(), s.actor(c), id, reason)
	if err != nil {
		return err
	}
	out := revokeResponse(res)
	out.DeviceID = id
	return c.JSON(http.StatusOK, out)
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
