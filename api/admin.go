package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"devpki/api/wire"
	"devpki/pkg/pki/mtls"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

type ctxKey int

const adminKey ctxKey = iota

func (s *Server) routesAdmin(e *echo.Echo) {
	g := e.Group("/v1/admin")
	g.POST("/tokens", s.createToken, s.requireRole(registry.RoleAdmin, registry.RoleOperator))
	s.routesRevoke(g)
	s.routesAdminQuery(g)
	s.routesPrereg(g)
}

// requireRole admits only a verified client certificate from this CA that
// maps to a registry admin holding one of roles. Every refusal is audited.
func (s *Server) requireRole(roles ...registry.Role) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			action := "admin " + r.Method + " " + c.Path()
			deny := func(status int, actor, why string) error {
				s.audit(r.Context(), &registry.AuditEvent{
					Actor: actor, Action: action, Result: registry.ResultDenied,
					Detail: why, SourceAddr: c.RealIP(),
				})
				slug := wire.SlugForbidden
				if status == http.StatusUnauthorized {
					slug = wire.SlugUnauthorized
				}
				return problem(status, slug, http.StatusText(status), why)
			}
			if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
				return deny(http.StatusUnauthorized, "anonymous", "an admin client certificate issued by this CA is required")
			}
			leaf := r.TLS.VerifiedChains[0][0]
			actor := "cert:" + leaf.SerialNumber.Text(16)
			// The same identity reading every component uses (pkg/pki/mtls).
			id, err := mtls.PeerIdentity(r.TLS, s.cfg.TrustDomain)
			if err != nil || id.Role != mtls.RoleAdmin {
				return deny(http.StatusForbidden, actor, "the client certificate is not an admin certificate")
			}
			tenant, name := id.Tenant, id.AdminName
			actor = "admin:" + name
			rec, err := s.cfg.Store.GetCertificate(r.Context(), leaf.SerialNumber.Text(16))
			if err != nil || rec.Kind != registry.KindAdmin || rec.Status == registry.CertRevoked {
				return deny(http.StatusForbidden, actor, "the admin certificate is unknown to the registry or revoked")
			}
			adm, err := s.cfg.Store.GetAdmin(r.Context(), name)
			if err != nil {
				return deny(http.StatusForbidden, actor, fmt.Sprintf("no admin named %q", name))
			}
			tn, err := s.cfg.Store.GetTenantByID(r.Context(), adm.TenantID)
			if err != nil || tn.Name != tenant {
				return deny(http.StatusForbidden, actor, "the certificate's tenant does not match the admin's")
			}
			for _, role := range roles {
				if adm.Role == role {
					c.SetRequest(r.WithContext(context.WithValue(r.Context(), adminKey, adm)))
					err := next(c)
					if err == nil && r.Method == http.MethodGet {
						// Reads are audited too; writes audit their own
						// action in the transaction that makes them.
						s.audit(r.Context(), &registry.AuditEvent{
							TenantID: adm.TenantID, Actor: actor, Action: action, Target: r.URL.RequestURI(),
							Result: registry.ResultOK, SourceAddr: c.RealIP(),
						})
					}
					return err
				}
			}
			return deny(http.StatusForbidden, actor, fmt.Sprintf("role %q may not %s", adm.Role, action))
		}
	}
}

func adminFrom(c echo.Context) *registry.Admin {
	a, _ := c.Request().Context().Value(adminKey).(*registry.Admin)
	return a
}

// createToken is POST /v1/admin/tokens.
func (s *Server) createToken(c echo.Context) error {
	var req wire.TokenCreateRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	adm := adminFrom(c)
	spec := provision.TokenSpec{
		Tenant:    req.Tenant,
		Serial:    req.Serial,
		Reinstate: req.Reinstate,
		Uses:      req.Uses,
		CreatedBy: "admin:" + adm.Name,
		Source:    c.RealIP(),
	}
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			return problem(http.StatusBadRequest, wire.SlugBadRequest, "Invalid argument", fmt.Sprintf("ttl %q is not a positive Go duration such as 24h", req.TTL))
		}
		spec.TTL = d
	}
	if spec.Tenant == "" {
		spec.Tenant = registry.DefaultTenant
	}
	if t, err := s.cfg.Store.GetTenantByID(c.Request().Context(), adm.TenantID); err != nil || t.Name != spec.Tenant {
		return problem(http.StatusForbidden, wire.SlugForbidden, "Forbidden", fmt.Sprintf("admin %q may not mint tokens for tenant %q", adm.Name, spec.Tenant))
	}
	token, t, err := provision.MintToken(c.Request().Context(), s.cfg.Store, s.cfg.Now(), spec)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, &wire.TokenCreateResponse{
		ID: t.ID, Token: token, Tenant: spec.Tenant, Serial: t.Serial, ExpiresAt: t.ExpiresAt, Uses: t.UsesLeft,
		Reinstate: t.Reinstate,
	})
}
