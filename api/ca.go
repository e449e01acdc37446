package api

import (
	"context"
	"net/http"

	"devpki/api/wire"

	"github.com/labstack/echo/v4"
)

func (s *Server) routesCA(e *echo.Echo) {
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
}

// MIME type of a DER certificate (RFC 2585), as AIA caIssuers serves it.
const mimeCert = "application/pkix-cert"

// routesCACerts serves the CA certificates: the root and the issuing chain
// as PEM bundles, and the issuing CA certificate as DER at /ca.crt, the URL
// issued certificates name in AIA caIssuers (RFC 5280 §4.2.2.1).
func (s *Server) routesCACerts(e *echo.Echo) {
	e.GET("/v1/ca/roots", s.getRoots)
	e.GET("/v1/ca/chain", s.pemBundle(func() []byte { return s.trust().chainPEM }))
	e.GET("/ca.crt", s.issuingCert)
	e.HEAD("/ca.crt", s.issuingCert)
	e.GET("/ca/:file", s.issuerCert)
}

func (s *Server) issuingCert(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", "public, max-age=300")
	return c.Blob(http.StatusOK, mimeCert, s.trust().issuing.Raw)
}

func (s *Server) pemBundle(b func() []byte) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Response().Header().Set("Cache-Control", "public, max-age=300")
		return c.Blob(http.StatusOK, "application/x-pem-file", b())
	}
}

func (s *Server) healthz(c echo.Context) error {
	if err := s.cfg.Store.Ping(c.Request().Context()); err != nil {
		s.cfg.Log.Error("health check: store unreachable", "err", err)
		return problem(http.StatusServiceUnavailable, wire.SlugUnavailable, "Store unreachable", "the registry database does not answer")
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readier is a store that knows whether it can commit right now
// (sqlstore.Store does). A store without it is ready whenever it answers.
type readier interface {
	Ready(ctx context.Context) error
}

// readyz is readiness: 503 store-unavailable, with Retry-After, while the
// registry does not answer or cannot commit; /healthz stays liveness.
func (s *Server) readyz(c echo.Context) error {
	ctx := c.Request().Context()
	err := s.cfg.Store.Ping(ctx)
	if r, ok := s.cfg.Store.(readier); ok && err == nil {
		err = r.Ready(ctx)
	}
	if err != nil {
		s.cfg.Log.Warn("readiness: registry cannot commit", "err", err)
		return problem(http.StatusServiceUnavailable, wire.SlugStoreUnavailable, "Registry cannot commit, retry later",
			"the registry database cannot record anything now")
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}
