package api

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/labstack/echo/v4"

	"devpki/api/wire"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// Claims held for an admin as possible clones (registry.Quarantine): listed
// by GET /v1/admin/devices?status=quarantined (every role, like the other
// device reads), closed by POST /v1/admin/quarantine/:id/dismiss (admin;
// admits no one) or POST /v1/admin/quarantine/:id/release (admin; lets the
// claimant in, revoking the identity it collided with). All are scoped to
// the caller's tenant.

func (s *Server) routesQuarantine(g *echo.Group) {
	g.POST("/quarantine/:id/dismiss", s.dismissQuarantine, s.requireRole(registry.RoleAdmin))
	g.POST("/quarantine/:id/release", s.releaseQuarantine, s.requireRole(registry.RoleAdmin))
}

// listQuarantined answers GET /v1/admin/devices?status=quarantined: the
// held claims of the caller's tenant (with all=true also those dismissed
// or released), oldest first, after the claim id after, in pages of limit.
func (s *Server) listQuarantined(c echo.Context, tenantID, serial, after string, limit int) error {
	ctx := c.Request().Context()
	status := registry.QuarantineHeld
	switch all := c.QueryParam("all"); all {
	case "", "false":
	case "true":
		status = ""
	default:
		return badArg("all %q must be true or false", all)
	}
	qs, err := s.cfg.Store.ListQuarantine(ctx, registry.QuarantineFilter{
		TenantID: tenantID, Status: status, Serial: serial, After: after, Limit: limit,
	})
	if err != nil {
		return err
	}
	tenant, err := s.tenantName(ctx, tenantID)
	if err != nil {
		return err
	}
	out := wire.DeviceList{Devices: []wire.Device{}, Quarantined: make([]wire.QuarantinedClaim, 0, len(qs))}
	for _, q := range qs {
		out.Quarantined = append(out.Quarantined, quarantineView(q, tenant))
	}
	if len(qs) > 0 && len(qs) == effectiveLimit(limit) {
		out.Next = qs[len(qs)-1].ID
	}
	return c.JSON(http.StatusOK, out)
}

// dismissQuarantine is POST /v1/admin/quarantine/:id/dismiss: the admin has
// looked into a held claim and closes it. The claimant stays refused.
func (s *Server) dismissQuarantine(c echo.Context) error {
	ctx := c.Request().Context()
	d, err := s.cfg.Admin.DismissQuarantine(ctx, s.actor(c), c.Param("id"))
	if err != nil {
		return err
	}
	tenant, err := s.tenantName(ctx, d.TenantID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, quarantineView(d, tenant))
}

// releaseQuarantine is POST /v1/admin/quarantine/:id/release (body
// wire.ReleaseRequest, may be empty): the admin lets the claimant of a
// held claim in (provision.Revocation.ReleaseQuarantine). It answers once
// the release is committed and the CRL rebuilt.
func (s *Server) releaseQuarantine(c echo.Context) error {
	if s.cfg.Revocation == nil {
		return problem(http.StatusNotImplemented, wire.SlugNotImplemented, "Revocation not configured",
			"releasing a claim revokes certificates, and this CA serves no CRL or OCSP")
	}
	ctx := c.Request().Context()
	id := c.Param("id")
	reason, err := releaseReason(c)
	if err != nil {
		return s.refuse(c, s.actor(c), provision.ActionQuarantineRelease, id, err)
	}
	res, err := s.cfg.Revocation.ReleaseQuarantine(ctx, s.actor(c), id, reason)
	if err != nil {
		return err
	}
	tenant, err := s.tenantName(ctx, res.Claim.TenantID)
	if err != nil {
		return err
	}
	rv := revokeResponse(&provision.RevokeResult{Certificates: res.Certificates})
	return c.JSON(http.StatusOK, &wire.ReleaseResponse{
		Claim: quarantineView(res.Claim, tenant), Device: deviceView(res.Device, tenant),
		Certificates: rv.Certificates, CRLNumber: res.CRLNumber,
	})
}

// releaseReason reads the body's reason as revokeReason does, but an
// empty body or reason means superseded: the identity is replaced, not
// compromised.
func releaseReason(c echo.Context) (int, error) {
	var b revokeBody
	if c.Request().ContentLength != 0 {
		if err := decodeJSON(c, &b); err != nil {
			return 0, err
		}
	}
	raw := bytes.TrimSpace(b.Reason)
	switch {
	case len(raw) == 0 || string(raw) == "null" || string(raw) == `""`:
		return registry.ReasonSuperseded, nil
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, problem(http.StatusBadRequest, wire.SlugBadRequest, "Malformed JSON body", err.Error())
		}
		return registry.ParseReason(s)
	}
	return registry.ParseReason(string(raw)) // a JSON number
}

func quarantineView(q *registry.Quarantine, tenant string) wire.QuarantinedClaim {
	v := wire.QuarantinedClaim{
		ID: q.ID, Tenant: tenant, Serial: q.Serial, MACs: q.MACs, EKHash: q.EKHash, Reason: string(q.Reason),
		ConflictDeviceID: q.ConflictDeviceID, ConflictEKHash: q.ConflictEKHash, SourceAddr: q.SourceAddr, Attempts: q.Attempts,
		FirstSeen: q.FirstSeen, LastSeen: q.LastSeen, Status: string(q.Status), DismissedBy: q.DismissedBy, DismissedAt: q.DismissedAt,
		ReleasedBy: q.ReleasedBy, ReleasedAt: q.ReleasedAt,
	}
	if q.IDevIDSerial != "" {
		v.IDevID = provision.IDevIDName(q.IDevIDIssuer, q.IDevIDSerial)
	}
	if q.ConflictIDevIDSerial != "" {
		v.ConflictIDevID = provision.IDevIDName(q.ConflictIDevIDIssuer, q.ConflictIDevIDSerial)
	}
	return v
}
