package api

import (
	"encoding/pem"
	"net/http"

	"github.com/labstack/echo/v4"

	"devpki/api/wire"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// routesAdmins adds the admin identities: create, list and revoke admins
// (role admin, within the caller's tenant; super-admins everywhere), and
// the renewal of one's own admin certificate over mTLS (every role).
func (s *Server) routesAdmins(g *echo.Group) {
	anyRole := s.requireRole(registry.RoleAdmin, registry.RoleOperator, registry.RoleAuditor)
	g.POST("/admins", s.createAdmin, s.requireRole(registry.RoleAdmin))
	g.GET("/admins", s.listAdmins, anyRole)
	g.POST("/admins/:name/revoke", s.revokeAdmin, s.requireRole(registry.RoleAdmin))
	g.POST("/renew", s.renewAdmin, anyRole)
}

// createAdmin is POST /v1/admin/admins.
func (s *Server) createAdmin(c echo.Context) error {
	var req wire.AdminCreateRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	out, err := s.cfg.Admin.CreateAdmin(c.Request().Context(), s.actor(c), provision.AdminSpec{
		Name: req.Name, Role: registry.Role(req.Role), Tenant: req.Tenant, CSRPEM: []byte(req.CSR),
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, s.adminCertView(out))
}

// renewAdmin is POST /v1/admin/renew: the caller's own admin certificate.
func (s *Server) renewAdmin(c echo.Context) error {
	var req wire.AdminRenewRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	out, err := s.cfg.Admin.RenewAdmin(c.Request().Context(), s.actor(c), []byte(req.CSR))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, s.adminCertView(out))
}

// listAdmins is GET /v1/admin/admins.
func (s *Server) listAdmins(c echo.Context) error {
	ctx := c.Request().Context()
	admins, err := s.cfg.Admin.ListAdmins(ctx, s.actor(c))
	if err != nil {
		return err
	}
	out := wire.AdminList{Admins: make([]wire.Admin, 0, len(admins))}
	for _, a := range admins {
		tenant, err := s.tenantName(ctx, a.TenantID)
		if err != nil {
			return err
		}
		out.Admins = append(out.Admins, adminView(a, tenant))
	}
	return c.JSON(http.StatusOK, out)
}

// revokeAdmin is POST /v1/admin/admins/:name/revoke.
func (s *Server) revokeAdmin(c echo.Context) error {
	ctx := c.Request().Context()
	adm, certs, err := s.cfg.Admin.RevokeAdmin(ctx, s.actor(c), c.Param("name"))
	if err != nil {
		return err
	}
	tenant, err := s.tenantName(ctx, adm.TenantID)
	if err != nil {
		return err
	}
	out := wire.AdminRevokeResponse{Admin: adminView(adm, tenant), Revoked: make([]wire.RevokedCertificate, 0, len(certs))}
	for _, rc := range certs {
		r := wire.RevokedCertificate{Serial: rc.Serial, Reason: registry.ReasonName(rc.RevocationReason), ReasonCode: rc.RevocationReason}
		if rc.RevokedAt != nil {
			r.RevokedAt = *rc.RevokedAt
		}
		out.Revoked = append(out.Revoked, r)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) adminCertView(out *provision.IssuedAdmin) *wire.AdminCertificate {
	return &wire.AdminCertificate{
		Admin:       adminView(out.Admin, out.Tenant),
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: out.Result.Certificate.Raw})),
		Chain:       s.trust().chainList,
	}
}

// adminView is a as the API shows it; a super-admin shows no tenant.
func adminView(a *registry.Admin, tenant string) wire.Admin {
	v := wire.Admin{Name: a.Name, Role: string(a.Role), Tenant: tenant, Super: a.Super, Status: string(a.Status),
		RevokedAt: a.RevokedAt, CreatedAt: a.CreatedAt}
	if a.Super {
		v.Tenant = ""
	}
	if v.Status == "" {
		v.Status = string(registry.AdminActive)
	}
	return v
}
