package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"devpki/api/wire"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

type ctxKey int

const actorKey ctxKey = iota

func (s *Server) routesAdmin(e *echo.Echo) {
	g := e.Group("/v1/admin")
	g.POST("/tokens", s.createToken, s.requireRole(registry.RoleAdmin, registry.RoleOperator))
	s.routesRevoke(g)
	s.routesAdminQuery(g)
	s.routesPrereg(g)
	s.routesIDevID(g)
	s.routesAdmins(g)
	s.routesTenants(g)
	s.routesAdminAudit(g)
	s.routesRollover(g)
	s.routesExpiry(g)
}

// requireRole admits only an admin holding one of roles, as
// provision.Admin.Authenticate decides (and audits every refusal). A
// successful read (GET) is audited too; writes audit their own action in
// the transaction that makes them, and provision audits what it refuses.
// A request refused here for its shape (a malformed body or argument) is
// audited as admin.denied.
func (s *Server) requireRole(roles ...registry.Role) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			// The admin lane: the registry serves this request on
			// connections and a commit lane that device traffic cannot
			// fill (registry.WithAdminLane), so a storm held at the
			// doors does not hold up the operator either.
			r := c.Request().WithContext(registry.WithAdminLane(c.Request().Context()))
			c.SetRequest(r)
			who, err := s.cfg.Admin.Authenticate(r.Context(), &provision.AuthRequest{
				TLS: r.TLS, Source: c.RealIP(), Route: r.Method + " " + c.Path(), Roles: roles,
			})
			if err != nil {
				s.authFailed(metricsDoorAdmin)
				return err
			}
			c.SetRequest(r.WithContext(context.WithValue(r.Context(), actorKey, who)))
			err = next(c)
			switch {
			case err == nil && r.Method == http.MethodGet:
				s.cfg.Admin.Read(r.Context(), who, r.URL.RequestURI())
			case err != nil && refusedByAPI(err):
				s.cfg.Admin.Refuse(r.Context(), who, provision.ActionAdminDenied, r.Method+" "+c.Path(), err)
			}
			return err
		}
	}
}

// actor is the authenticated admin of a request behind requireRole.
func (s *Server) actor(c echo.Context) provision.Actor {
	a, _ := c.Request().Context().Value(actorKey).(provision.Actor)
	return a
}

// createToken is POST /v1/admin/tokens.
func (s *Server) createToken(c echo.Context) error {
	var req wire.TokenCreateRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	spec := provision.TokenSpec{Tenant: req.Tenant, Serial: req.Serial, Reinstate: req.Reinstate, Uses: req.Uses}
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			return badArg("ttl %q is not a positive Go duration such as 24h", req.TTL)
		}
		spec.TTL = d
	}
	token, t, err := s.cfg.Admin.MintToken(c.Request().Context(), s.actor(c), spec)
	if err != nil {
		return err
	}
	tenant := req.Tenant
	if tenant == "" {
		tenant = registry.DefaultTenant
	}
	return c.JSON(http.StatusCreated, &wire.TokenCreateResponse{
		ID: t.ID, Token: token, Tenant: tenant, Serial: t.Serial, ExpiresAt: t.ExpiresAt, Uses: t.UsesLeft,
		Reinstate: t.Reinstate,
	})
}

// tenantName is the name of tenant id, for views.
func (s *Server) tenantName(ctx context.Context, id string) (string, error) {
	if id == "" {
		id = registry.DefaultTenant
	}
	t, err := s.cfg.Store.GetTenantByID(ctx, id)
	if err != nil {
		return "", fmt.Errorf("tenant %s: %w", id, err)
	}
	return t.Name, nil
}
