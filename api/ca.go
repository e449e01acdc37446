package api

import (
	"devpki/api/wire"
	"net/http"

	"github.com/labstack/echo/v4"
)

func (s *Server) routesCA(e *echo.Echo) {
	e.GET("/v1/ca/roots", s.pemBundle(func() []byte { return s.rootsPEM }))
	e.GET("/v1/ca/chain", s.pemBundle(func() []byte { return s.chainPEM }))
	e.GET("/healthz", s.healthz)
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
