package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"devpki/api/wire"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// routesTenants adds the tenants: every role lists those in its scope;
// only super-admins (role admin) create them and change their policy —
// provision refuses anyone else.
func (s *Server) routesTenants(g *echo.Group) {
	g.GET("/tenants", s.listTenants, s.requireRole(registry.RoleAdmin, registry.RoleOperator, registry.RoleAuditor))
	g.POST("/tenants", s.createTenant, s.requireRole(registry.RoleAdmin))
	g.POST("/tenants/:name", s.updateTenant, s.requireRole(registry.RoleAdmin))
}

// parseLifetime reads a tenant certificate lifetime ("" and "0": the CA's).
func parseLifetime(v string) (time.Duration, error) {
	if v == "" || v == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, badArg("cert_lifetime %q is not a Go duration such as 2h", v)
	}
	return d, nil
}

// parseRenewGrace reads a tenant renewal grace period: "" and "0" the
// CA's, "off" disabled (negative), else a Go duration.
func parseRenewGrace(v string) (time.Duration, error) {
	switch v {
	case "", "0":
		return 0, nil
	case "off":
		return -1, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, badArg("renew_grace %q is not a Go duration such as 720h, or off", v)
	}
	return d, nil
}

// createTenant is POST /v1/admin/tenants.
func (s *Server) createTenant(c echo.Context) error {
	var req wire.TenantCreateRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	life, err := parseLifetime(req.CertLifetime)
	if err != nil {
		return err
	}
	grace, err := parseRenewGrace(req.RenewGrace)
	if err != nil {
		return err
	}
	t, err := s.cfg.Admin.AddTenant(c.Request().Context(), s.actor(c), provision.TenantSpec{
		Name: req.Name, RequireTPM: req.RequireTPM, Methods: req.Methods, KeyTypes: req.KeyTypes, CertLifetime: life,
		RenewGrace: grace,
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, tenantView(t))
}

// updateTenant is POST /v1/admin/tenants/:name: change its policy.
func (s *Server) updateTenant(c echo.Context) error {
	var req wire.TenantPolicyRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	p := provision.TenantPolicy{RequireTPM: req.RequireTPM, Methods: req.Methods, KeyTypes: req.KeyTypes}
	if req.CertLifetime != nil {
		life, err := parseLifetime(*req.CertLifetime)
		if err != nil {
			return err
		}
		p.CertLifetime = &life
	}
	if req.RenewGrace != nil {
		grace, err := parseRenewGrace(*req.RenewGrace)
		if err != nil {
			return err
		}
		p.RenewGrace = &grace
	}
	t, err := s.cfg.Admin.UpdateTenant(c.Request().Context(), s.actor(c), c.Param("name"), p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, tenantView(t))
}

// listTenants is GET /v1/admin/tenants.
func (s *Server) listTenants(c echo.Context) error {
	ts, err := s.cfg.Admin.ListTenants(c.Request().Context(), s.actor(c))
	if err != nil {
		return err
	}
	out := wire.TenantList{Tenants: make([]wire.Tenant, 0, len(ts))}
	for _, t := range ts {
		out.Tenants = append(out.Tenants, tenantView(t))
	}
	return c.JSON(http.StatusOK, out)
}

func tenantView(t *registry.Tenant) wire.Tenant {
	v := wire.Tenant{Name: t.Name, RequireTPM: t.RequireTPM, Methods: t.Methods, KeyTypes: t.KeyTypes, CreatedAt: t.CreatedAt}
	if t.CertLifetime > 0 {
		v.CertLifetime = t.CertLifetime.String()
	}
	switch {
	case t.RenewGrace < 0:
		v.RenewGrace = "off"
	case t.RenewGrace > 0:
		v.RenewGrace = t.RenewGrace.String()
	}
	return v
}

// scopeTenant is the tenant a list route reads: the ?tenant= named, if in
// the caller's scope (another tenant, or an unknown one, is not found),
// else the caller's own tenant (a super-admin's home tenant).
func (s *Server) scopeTenant(c echo.Context) (string, error) {
	who := s.actor(c)
	name := c.QueryParam("tenant")
	if name == "" {
		return who.TenantID, nil
	}
	t, err := s.cfg.Store.GetTenant(c.Request().Context(), name)
	if err == nil && !provision.InScope(who, t.ID) {
		err = registry.ErrNotFound
	}
	if err != nil {
		return "", notFound(fmt.Errorf("no tenant %q in your scope: %w", name, err))
	}
	return t.ID, nil
}

// notFound marks err, when it is registry.ErrNotFound (an unknown object or
// one of another tenant), as a refusal made in api, so requireRole audits
// it as denied; other errors pass unchanged.
func notFound(err error) error {
	if errors.Is(err, registry.ErrNotFound) {
		return &requestError{err}
	}
	return err
}
