package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"devpki/pkg/pki/mtls"
)

// HeaderRequestID carries the id the server gives each request: in the
// answer's headers, in every problem body and in the access log line, so
// an operator can find the one from the other. A client-sent value is
// ignored (ids are the server's, unique and unforgeable in the log).
const HeaderRequestID = "X-Request-Id"

const (
	ctxRequestID = "devpki.request_id"
	ctxTenant    = "devpki.tenant"
	ctxProblem   = "devpki.problem"
)

// requestID gives the request its id (12 random bytes, hex).
func requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		var b [12]byte
		_, _ = rand.Read(b[:])
		id := hex.EncodeToString(b[:])
		c.Set(ctxRequestID, id)
		c.Response().Header().Set(HeaderRequestID, id)
		return next(c)
	}
}

// accessLog writes one line per request to log (at info level): time,
// request_id, method, route (the route pattern, not the path: device ids
// stay out of it), status, latency_ms, remote, client_serial (the serial,
// hex, of the client certificate presented, if any), tenant (of the
// authenticated client or the enrolled device, when known) and problem
// (the slug of an error answer).
func (s *Server) accessLog(log *slog.Logger) echo.MiddlewareFunc {
	return middleware.RequestLoggerWithConfig(middleware.RequestLoggerConfig{
		HandleError: true, // the error handler runs first, so the status is the one sent
		LogLatency:  true,
		LogStatus:   true,
		LogMethod:   true,
		LogRemoteIP: true,
		LogValuesFunc: func(c echo.Context, v middleware.RequestLoggerValues) error {
			attrs := []slog.Attr{
				slog.String("request_id", stringOf(c, ctxRequestID)),
				slog.String("method", v.Method),
				slog.String("route", c.Path()),
				slog.Int("status", v.Status),
				slog.Float64("latency_ms", float64(v.Latency.Microseconds())/1000),
				slog.String("remote", v.RemoteIP),
			}
			if cs := c.Request().TLS; cs != nil && len(cs.PeerCertificates) > 0 {
				attrs = append(attrs, slog.String("client_serial", cs.PeerCertificates[0].SerialNumber.Text(16)))
			}
			if t := s.tenantOf(c); t != "" {
				attrs = append(attrs, slog.String("tenant", t))
			}
			if p := stringOf(c, ctxProblem); p != "" {
				attrs = append(attrs, slog.String("problem", p))
			}
			log.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs...)
			return nil
		},
	})
}

// setTenant records the tenant a request turned out to be about (an
// enrolled device's), for the access log.
func setTenant(c echo.Context, tenant string) { c.Set(ctxTenant, tenant) }

// tenantOf is the tenant set by the handler or, failing that, that of a
// verified devpki client certificate (a device's or an admin's).
func (s *Server) tenantOf(c echo.Context) string {
	if t := stringOf(c, ctxTenant); t != "" {
		return t
	}
	if cs := c.Request().TLS; cs != nil && len(cs.VerifiedChains) > 0 {
		if id, err := mtls.PeerIdentity(cs, s.cfg.TrustDomain); err == nil {
			return id.Tenant
		}
	}
	return ""
}

func stringOf(c echo.Context, key string) string {
	s, _ := c.Get(key).(string)
	return s
}
