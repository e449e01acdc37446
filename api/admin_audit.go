package api

import (
	"crypto/x509"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"devpki/api/wire"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// routesAdminAudit adds the audit export and the refusal log (every role,
// scoped to the caller's tenant).
func (s *Server) routesAdminAudit(g *echo.Group) {
	anyRole := s.requireRole(registry.RoleAdmin, registry.RoleOperator, registry.RoleAuditor)
	g.GET("/audit/export", s.exportAudit, anyRole)
	g.GET("/audit/refusals", s.listRefusals, anyRole)
}

// exportAudit is GET /v1/admin/audit/export[?since=RFC3339][&tenant=NAME]:
// JSON lines (registry.ExportWriter) that `ca audit verify --file` checks
// offline. A tenant admin gets its tenant's chain (provision.AuditScope).
// The answer is streamed: an export cut short lacks its end line, which
// the verifier reports.
func (s *Server) exportAudit(c echo.Context) error {
	var opts provision.ExportOptions
	if v := c.QueryParam("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return badArg("since %q is not an RFC 3339 time", v)
		}
		opts.Since = t
	}
	ctx := c.Request().Context()
	tenant, err := s.cfg.Admin.AuditScope(ctx, s.actor(c), c.QueryParam("tenant"))
	if err != nil {
		return err
	}
	opts.TenantID = tenant
	c.Response().Header().Set(echo.HeaderContentType, "application/x-ndjson")
	// Nothing is sent before the first 64 KiB or the end, so an error
	// before then still answers a problem.
	_, err = provision.ExportAudit(ctx, s.cfg.Store, opts, c.Response())
	if err != nil && !c.Response().Committed {
		c.Response().Header().Del(echo.HeaderContentType)
	}
	return err
}

// listRefusals is GET /v1/admin/audit/refusals[?after=ID][&limit=N]: the
// anonymous refusal aggregates of the caller's tenant (those naming no
// tenant are the default tenant's).
func (s *Server) listRefusals(c echo.Context) error {
	after, want, err := pageArgs(c, "a refusal id")
	if err != nil {
		return err
	}
	rs, next, err := scopedPage(c.Request().Context(), s.actor(c), after, want, s.cfg.Store.ListRefusals,
		func(r *registry.Refusal) (int64, string) { return r.ID, r.TenantID })
	if err != nil {
		return err
	}
	out := wire.RefusalList{Refusals: []wire.Refusal{}, Next: next}
	for _, r := range rs {
		out.Refusals = append(out.Refusals, wire.Refusal{
			ID: r.ID, Window: r.Window, SourceAddr: r.SourceAddr, Action: r.Action, Reason: r.Reason,
			Tenant: r.TenantID, Count: r.Count, First: r.First, Last: r.Last, Sample: r.Sample,
		})
	}
	return c.JSON(http.StatusOK, out)
}

// auditRefusals audits what a door's handler refuses itself (a malformed
// body, an unsupported media type, an oversized body: refusedByAPI), as
// provision audits its own refusals: a caller with a certificate this CA
// issued as a chained event, anyone else in the refusal log.
func (s *Server) auditRefusals(action provision.Action) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			err := next(c)
			if err == nil || !refusedByAPI(err) {
				return err
			}
			who := provision.Actor{Kind: provision.ActorAnonymous}
			st := c.Request().TLS
			chains := [][]*x509.Certificate(nil)
			if st != nil {
				chains = st.VerifiedChains
				if len(chains) == 0 && len(st.PeerCertificates) > 0 {
					// A route that leaves its certificate to provision
					// (renewal): verified here, on the refusal path only.
					chains, _ = s.peers.Verify(st.PeerCertificates, s.cfg.Now())
				}
			}
			if len(chains) > 0 && len(chains[0]) > 0 {
				who = provision.Actor{Kind: provision.ActorCert, ID: chains[0][0].SerialNumber.Text(16)}
			}
			return s.refuse(c, who, action, c.Request().Method+" "+c.Path(), err)
		}
	}
}
