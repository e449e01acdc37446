package api

import (
	"encoding/pem"
	"net/http"

	"github.com/labstack/echo/v4"

	"devpki/api/wire"
	"devpki/pkg/registry"
)

// routesIDevID adds the manufacturer CAs of factory IDevID enrollment,
// per tenant: admins add, every role reads.
func (s *Server) routesIDevID(g *echo.Group) {
	g.POST("/idevid/roots", s.addIDevIDRoot, s.requireRole(registry.RoleAdmin))
	g.GET("/idevid/roots", s.listIDevIDRoots, s.requireRole(registry.RoleAdmin, registry.RoleOperator, registry.RoleAuditor))
}

// addIDevIDRoot is POST /v1/admin/idevid/roots: 201 when a certificate was
// added, 200 when the tenant trusted every one already.
func (s *Server) addIDevIDRoot(c echo.Context) error {
	var req wire.AddIDevIDRootRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	added, err := s.cfg.Admin.AddIDevIDRoot(c.Request().Context(), s.actor(c), req.Tenant, []byte(req.PEM))
	if err != nil {
		return err
	}
	status := http.StatusOK
	out := make([]wire.IDevIDRoot, 0, len(added))
	for _, a := range added {
		v := s.idevidRootView(c, a.CA)
		v.Added = a.Added
		if a.Added {
			status = http.StatusCreated
		}
		out = append(out, v)
	}
	return c.JSON(status, out)
}

// listIDevIDRoots is GET /v1/admin/idevid/roots[?tenant=NAME].
func (s *Server) listIDevIDRoots(c echo.Context) error {
	cas, err := s.cfg.Admin.ListIDevIDRoots(c.Request().Context(), s.actor(c), c.QueryParam("tenant"))
	if err != nil {
		return err
	}
	out := make([]wire.IDevIDRoot, 0, len(cas))
	for _, ca := range cas {
		out = append(out, s.idevidRootView(c, ca))
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) idevidRootView(c echo.Context, r *registry.IDevIDCA) wire.IDevIDRoot {
	tenant := r.TenantID
	if t, err := s.cfg.Store.GetTenantByID(c.Request().Context(), r.TenantID); err == nil {
		tenant = t.Name
	}
	return wire.IDevIDRoot{
		ID: r.ID, Tenant: tenant, Fingerprint: r.Fingerprint, Subject: r.Subject, Kind: string(r.Kind),
		AddedBy: r.AddedBy, CreatedAt: r.CreatedAt,
		PEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.DER})),
	}
}
