package api

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"devpki/api/wire"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// ExpiryStore is what the expiry forecast reads (*sqlstore.Store has it).
// It is apart from Store so that stores without it still serve the rest.
type ExpiryStore interface {
	provision.ForecastReader
}

// routesExpiry adds GET /v1/admin/certificates/expiring (every role).
func (s *Server) routesExpiry(g *echo.Group) {
	g.GET("/certificates/expiring", s.expiring,
		s.requireRole(registry.RoleAdmin, registry.RoleOperator, registry.RoleAuditor))
}

// expiring is GET /v1/admin/certificates/expiring?within=30d[&tenant=T][&limit=N]:
// the expiry forecast (provision.ExpiryForecast) of the caller's tenant,
// of tenant T, or — for a super-admin without tenant — of every tenant.
func (s *Server) expiring(c echo.Context) error {
	st, ok := s.cfg.Store.(ExpiryStore)
	if !ok {
		return problem(http.StatusNotImplemented, wire.SlugNotImplemented, "Not implemented", "this registry cannot forecast expiries")
	}
	v := c.QueryParam("within")
	if v == "" {
		return badArg("within is required: a number of days such as 30d or a duration such as 72h")
	}
	within, err := provision.ParseWithin(v)
	if err != nil {
		return &requestError{err}
	}
	limit, err := queryLimit(c)
	if err != nil {
		return err
	}
	who := s.actor(c)
	tenantID := ""
	if c.QueryParam("tenant") != "" || !who.Super {
		if tenantID, err = s.scopeTenant(c); err != nil {
			return err
		}
	}
	ctx := c.Request().Context()
	fc, err := provision.ExpiryForecast(ctx, st, who, tenantID, within, limit, s.cfg.Now())
	if err != nil {
		return err
	}
	names := map[string]string{}
	name := func(id string) (string, error) {
		if n, ok := names[id]; ok {
			return n, nil
		}
		n, err := s.tenantName(ctx, id)
		names[id] = n
		return n, err
	}
	out := wire.ExpiryForecast{From: fc.From, To: fc.To, Tenants: []wire.ExpiryTenant{}, Overdue: []wire.OverdueDevice{},
		OverdueTotal: fc.OverdueTotal}
	for _, d := range fc.Days {
		n, err := name(d.TenantID)
		if err != nil {
			return err
		}
		if len(out.Tenants) == 0 || out.Tenants[len(out.Tenants)-1].Tenant != n {
			out.Tenants = append(out.Tenants, wire.ExpiryTenant{Tenant: n})
		}
		t := &out.Tenants[len(out.Tenants)-1]
		t.Days = append(t.Days, wire.ExpiryDay{Day: d.Day.Format(time.DateOnly), Count: d.Count})
		t.Total += d.Count
		out.Total += d.Count
	}
	for _, o := range fc.Overdue {
		n, err := name(o.TenantID)
		if err != nil {
			return err
		}
		out.Overdue = append(out.Overdue, wire.OverdueDevice{
			DeviceID: o.DeviceID, Serial: o.DeviceSerial, Tenant: n, Certificate: o.Serial,
			LastSeen: o.IssuedAt, RenewAfter: provision.RenewAt(o.NotBefore, o.NotAfter), NotAfter: o.NotAfter,
		})
	}
	return c.JSON(http.StatusOK, out)
}
