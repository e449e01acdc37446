package api

import (
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"devpki/api/client"
	"devpki/pkg/registry"
)

// Claims held for an admin as possible clones (registry.Quarantine): listed
// by GET /v1/admin/devices?status=quarantined (every role, like the other
// device reads) and closed by POST /v1/admin/quarantine/:id/dismiss (admin).
// Both are scoped to the caller's tenant.

func (s *Server) routesQuarantine(g *echo.Group) {
	g.POST("/quarantine/:id/dismiss", s.dismissQuarantine, s.requireRole(registry.RoleAdmin))
}

// listQuarantined answers GET /v1/admin/devices?status=quarantined: the
// held claims of the caller's tenant, oldest first, after the claim id
// after, in pages of limit.
func (s *Server) listQuarantined(c echo.Context, tenantID, serial, after string, limit int) error {
	ctx := c.Request().Context()
	qs, err := s.cfg.Store.ListQuarantine(ctx, registry.QuarantineFilter{
		TenantID: tenantID, Status: registry.QuarantineHeld, Serial: serial, After: after, Limit: limit,
	})
	if err != nil {
		return err
	}
	tenant, err := s.cfg.Store.GetTenantByID(ctx, tenantID)
	if err != nil {
		return err
	}
	out := client.DeviceList{Devices: []client.Device{}, Quarantined: make([]client.QuarantinedClaim, 0, len(qs))}
	for _, q := range qs {
		out.Quarantined = append(out.Quarantined, quarantineView(q, tenant.Name))
	}
	if len(qs) > 0 && len(qs) == effectiveLimit(limit) {
		out.Next = qs[len(qs)-1].ID
	}
	return c.JSON(http.StatusOK, out)
}

// dismissQuarantine is POST /v1/admin/quarantine/:id/dismiss: the admin has
// looked into a held claim and closes it. The claimant stays refused.
func (s *Server) dismissQuarantine(c echo.Context) error {
	adm := adminFrom(c)
	ctx := c.Request().Context()
	id := c.Param("id")
	q, err := s.cfg.Store.GetQuarantine(ctx, id)
	if err != nil || q.TenantID != adm.TenantID {
		return problem(http.StatusNotFound, "not-found", "Not found", fmt.Sprintf("no quarantined claim %q in your tenant", id))
	}
	if q.Status != registry.QuarantineHeld {
		return problem(http.StatusConflict, "conflict", "Already dismissed",
			fmt.Sprintf("claim %s was dismissed by %s", id, q.DismissedBy))
	}
	actor := "admin:" + adm.Name
	d, err := s.cfg.Store.DismissQuarantine(ctx, id, actor, &registry.AuditEvent{
		TenantID: adm.TenantID, Actor: actor, Action: "quarantine.dismiss", Target: id, Result: registry.ResultOK,
		Detail:     fmt.Sprintf("serial=%s ek=%s reason=%s device=%s attempts=%d", q.Serial, q.EKHash, q.Reason, q.ConflictDeviceID, q.Attempts),
		SourceAddr: c.RealIP(),
	})
	if err != nil {
		return err
	}
	tenant, err := s.cfg.Store.GetTenantByID(ctx, d.TenantID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, quarantineView(d, tenant.Name))
}

func quarantineView(q *registry.Quarantine, tenant string) client.QuarantinedClaim {
	return client.QuarantinedClaim{
		ID: q.ID, Tenant: tenant, Serial: q.Serial, MACs: q.MACs, EKHash: q.EKHash, Reason: string(q.Reason),
		ConflictDeviceID: q.ConflictDeviceID, SourceAddr: q.SourceAddr, Attempts: q.Attempts,
		FirstSeen: q.FirstSeen, LastSeen: q.LastSeen, Status: string(q.Status), DismissedBy: q.DismissedBy, DismissedAt: q.DismissedAt,
	}
}
