package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// Metrics counts what the API decides itself: failed authentications at
// the doors (authFailure) and on the admin routes (door "admin"). The door
// names are a fixed set. pkg/metrics implements it.
type Metrics interface {
	AuthFailure(door string)
}

// metricsDoorAdmin is the door name of the admin routes and /metrics.
const metricsDoorAdmin = "admin"

func (s *Server) authFailed(door string) {
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.AuthFailure(door)
	}
}

// routesMetrics serves GET /metrics (Config.MetricsHandler) to admin
// certificates of every role. Refused callers are audited like any admin
// route's; a successful scrape is not (one every few seconds would
// flood the audit log with reads of counters).
func (s *Server) routesMetrics(e *echo.Echo) {
	if s.cfg.MetricsHandler == nil {
		return
	}
	h := echo.WrapHandler(s.cfg.MetricsHandler)
	e.GET("/metrics", func(c echo.Context) error {
		r := c.Request()
		_, err := s.cfg.Admin.Authenticate(r.Context(), &provision.AuthRequest{
			TLS: r.TLS, Source: c.RealIP(), Route: r.Method + " " + c.Path(),
			Roles: []registry.Role{registry.RoleAdmin, registry.RoleOperator, registry.RoleAuditor},
		})
		if err != nil {
			s.authFailed(metricsDoorAdmin)
			return err
		}
		return h(c)
	})
}

// MetricsServer is the optional plain-HTTP metrics listener's handler
// (ca serve's metrics_listen): GET /metrics only, without authentication —
// bind it to loopback or a monitoring network.
func MetricsServer(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	return mux
}
