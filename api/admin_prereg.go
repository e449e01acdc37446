package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"devpki/api/wire"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// routesPrereg adds TPM EK pre-registration (operators and admins) and the
// TPM manufacturer roots (admins add, every role reads).
func (s *Server) routesPrereg(g *echo.Group) {
	g.POST("/preregistrations", s.preregister, s.requireRole(registry.RoleAdmin, registry.RoleOperator))
	g.POST("/tpm/roots", s.addTPMRoot, s.requireRole(registry.RoleAdmin))
	g.GET("/tpm/roots", s.listTPMRoots, s.requireRole(registry.RoleAdmin, registry.RoleOperator, registry.RoleAuditor))
}

// addTPMRoot is POST /v1/admin/tpm/roots: one CA certificate, kept as a
// root when self-signed and as an intermediate otherwise.
func (s *Server) addTPMRoot(c echo.Context) error {
	var req wire.AddTPMRootRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	root, err := s.cfg.Admin.AddTPMRoot(c.Request().Context(), s.actor(c), []byte(req.PEM))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, tpmRootView(root))
}

func (s *Server) listTPMRoots(c echo.Context) error {
	roots, err := s.cfg.Store.ListTPMRoots(c.Request().Context())
	if err != nil {
		return err
	}
	out := make([]wire.TPMRoot, 0, len(roots))
	for _, r := range roots {
		out = append(out, tpmRootView(r))
	}
	return c.JSON(http.StatusOK, out)
}

func tpmRootView(r *registry.TPMRoot) wire.TPMRoot {
	kind := r.Kind
	if kind == "" {
		kind = registry.TPMRootCA
	}
	return wire.TPMRoot{Fingerprint: r.Fingerprint, Subject: r.Subject, Kind: string(kind), AddedBy: r.AddedBy, CreatedAt: r.CreatedAt}
}

// preregister is POST /v1/admin/preregistrations.
func (s *Server) preregister(c echo.Context) error {
	var req wire.PreregisterRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	p, err := s.cfg.Admin.Preregister(c.Request().Context(), s.actor(c), provision.PreregisterSpec{
		Serial: req.Serial, MACs: req.MACs, EKPub: req.EKPub,
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, &wire.Preregistration{EKHash: p.EKHash, Serial: p.Serial, MACs: p.MACs})
}
