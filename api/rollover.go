package api

import (
	"context"
	"crypto/x509"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/labstack/echo/v4"
	"github.com/smallstep/pkcs7"
	"go.step.sm/crypto/pemutil"

	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// trustView is what the server publishes and trusts for one state of the
// CA's issuers (a rollover changes it; see Config.Issuers).
type trustView struct {
	rootsPEM  []byte // the trust bundle: roots, then cross certificates
	chainPEM  []byte
	chainList []string
	issuing   *x509.Certificate
	peers     *pki.ChainVerifier
	cacerts   []byte // EST cacerts: chain, roots, cross certificates
	byKID     map[string]*x509.Certificate
}

// chainOf is the chain to send with leaf: its own issuer's (a rollover may
// activate another between signing and answering), else the active one.
func (v *trustView) chainOf(leaf *x509.Certificate) []string {
	if c := v.byKID[pki.AuthorityKeyID(leaf)]; c != nil && c != v.issuing {
		return []string{string(pemCert(c))}
	}
	return v.chainList
}

// trustCache holds the view of the last IssuerSet state seen (read on
// every request: no lock).
type trustCache struct {
	cur atomic.Pointer[cachedTrust]
}

type cachedTrust struct {
	state *pki.IssuerSetState
	view  *trustView
}

// trust returns the current view: static (Config.Root and Chain) without
// Config.Issuers, else made from the issuers' state and kept until it
// changes.
func (s *Server) trust() *trustView {
	if s.cfg.Issuers == nil {
		return s.static
	}
	st := s.cfg.Issuers.State()
	if c := s.trustCache.cur.Load(); c != nil && c.state == st {
		return c.view
	}
	v := &trustView{byKID: map[string]*x509.Certificate{}}
	chain := st.Active.Chain()
	v.issuing = chain[0]
	for _, c := range chain {
		p := pemCert(c)
		v.chainPEM = append(v.chainPEM, p...)
		v.chainList = append(v.chainList, string(p))
	}
	roots := x509.NewCertPool()
	var der []byte
	for _, c := range chain {
		der = append(der, c.Raw...)
	}
	for _, r := range st.Roots {
		roots.AddCert(r)
		v.rootsPEM = append(v.rootsPEM, pemCert(r)...)
		der = append(der, r.Raw...)
	}
	for _, c := range st.Cross {
		v.rootsPEM = append(v.rootsPEM, pemCert(c)...)
		der = append(der, c.Raw...)
	}
	var known []*x509.Certificate
	for kid, i := range st.Trusted {
		known = append(known, i.Chain()...)
		v.byKID[kid] = i.Chain()[0]
	}
	v.peers = pki.NewChainVerifier(roots, known, x509.ExtKeyUsageClientAuth)
	if p7, err := pkcs7.DegenerateCertificate(der); err == nil {
		v.cacerts = estBase64(p7)
	} else {
		s.cfg.Log.Error("EST cacerts after a rollover", "err", err)
		v.cacerts = s.static.cacerts
	}
	// Two requests may build the same view at once: either is right.
	s.trustCache.cur.Store(&cachedTrust{state: st, view: v})
	return v
}

// staticTrust is the view of Config.Root and Config.Chain.
func staticTrust(cfg Config, est *estBodies) *trustView {
	v := &trustView{rootsPEM: pemCert(cfg.Root), peers: peerVerifier(cfg.Root, cfg.Chain), issuing: cfg.Chain[0]}
	for _, c := range cfg.Chain {
		p := pemCert(c)
		v.chainPEM = append(v.chainPEM, p...)
		v.chainList = append(v.chainList, string(p))
	}
	if est != nil {
		v.cacerts = est.cacerts
	}
	return v
}

// getRoots is GET /v1/ca/roots: the trust bundle (every root in use, then
// the cross certificates that vouch for newer roots). A device that fetches
// it over its certificate is counted as having seen it (rollover status).
func (s *Server) getRoots(c echo.Context) error {
	s.recordBundleFetch(c)
	c.Response().Header().Set("Cache-Control", "public, max-age=300")
	return c.Blob(http.StatusOK, "application/x-pem-file", s.trust().rootsPEM)
}

// recordBundleFetch counts the fetch of an authenticated device; a failure
// is logged, never refused: the bundle is public.
func (s *Server) recordBundleFetch(c echo.Context) {
	r := c.Request()
	if s.cfg.Rollover == nil || r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return
	}
	leaf := r.TLS.VerifiedChains[0][0]
	if err := s.cfg.Rollover.RecordBundleFetch(r.Context(), leaf); err != nil {
		s.cfg.Log.Warn("rollover: could not record a trust bundle fetch", "device", leaf.Subject.CommonName, "err", err)
	}
}

// issuerCert is GET /ca/<key id>.crt: a CA issuer's certificate by key id
// (what certificates of issuers after the first name in AIA caIssuers).
func (s *Server) issuerCert(c echo.Context) error {
	kid := strings.TrimSuffix(c.Param("file"), ".crt")
	cert := s.trust().byKID[kid]
	if cert == nil {
		return problem(http.StatusNotFound, wire.SlugNotFound, "Unknown CA issuer", "no CA issuer has key id "+kid)
	}
	c.Response().Header().Set("Cache-Control", "public, max-age=300")
	return c.Blob(http.StatusOK, mimeCert, cert.Raw)
}

// getIssuerCRL is GET /crl/<key id>: the CRL of one CA issuer, signed by
// it, listing its revoked certificates; the first issuer's is also /crl.
func (s *Server) getIssuerCRL(c echo.Context) error {
	rev := s.cfg.Revocation.ForIssuer(c.Param("kid"))
	if rev == nil {
		return problem(http.StatusNotFound, wire.SlugNotFound, "Unknown CA issuer", "no CRL for CA issuer "+c.Param("kid"))
	}
	crl, err := rev.CRL(c.Request().Context())
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	cacheFor(c.Response().Header(), now, crl.ThisUpdate, rev.MaxAge(crl.NextUpdate, now), crl.ETag, false)
	if etagMatch(c.Request().Header.Get("If-None-Match"), crl.ETag) {
		return c.NoContent(http.StatusNotModified)
	}
	return c.Blob(http.StatusOK, mimeCRL, crl.DER)
}

func (s *Server) routesRollover(g *echo.Group) {
	if s.cfg.Rollover == nil {
		return
	}
	g.POST("/rollover/prepare", s.rolloverPrepare, s.requireRole(registry.RoleAdmin))
	g.POST("/rollover/activate", s.rolloverStep(s.cfg.Rollover.Activate), s.requireRole(registry.RoleAdmin))
	g.POST("/rollover/retire", s.rolloverStep(s.cfg.Rollover.Retire), s.requireRole(registry.RoleAdmin))
	g.GET("/rollover/status", s.rolloverStatus, s.requireRole(registry.RoleAdmin, registry.RoleOperator, registry.RoleAuditor))
}

func (s *Server) rolloverPrepare(c echo.Context) error {
	var req wire.RolloverPrepareRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	res, err := s.cfg.Rollover.Prepare(c.Request().Context(), s.actor(c), req.Root)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, rolloverStep(res))
}

func (s *Server) rolloverStep(step func(context.Context, provision.Actor) (*provision.RolloverResult, error)) echo.HandlerFunc {
	return func(c echo.Context) error {
		if err := decodeJSON(c, &struct{}{}); err != nil && c.Request().ContentLength > 0 {
			return err
		}
		res, err := step(c.Request().Context(), s.actor(c))
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, rolloverStep(res))
	}
}

func (s *Server) rolloverStatus(c echo.Context) error {
	st, err := s.cfg.Rollover.Status(c.Request().Context(), s.actor(c))
	if err != nil {
		return err
	}
	out := &wire.RolloverStatusResponse{Tenants: []wire.RolloverTenant{}}
	for _, i := range st.Issuers {
		out.Issuers = append(out.Issuers, rolloverIssuer(i))
	}
	if st.Target != nil {
		out.Target = st.Target.KeyID
	}
	for _, t := range st.Tenants {
		name, err := s.tenantName(c.Request().Context(), t.TenantID)
		if err != nil {
			name = t.TenantID
		}
		out.Tenants = append(out.Tenants, wire.RolloverTenant{Tenant: name, Devices: t.Devices, OnNewIssuer: t.OnIssuer, FetchedBundle: t.FetchedBundle})
	}
	return c.JSON(http.StatusOK, out)
}

func rolloverStep(res *provision.RolloverResult) *wire.RolloverStepResponse {
	out := &wire.RolloverStepResponse{Issuer: rolloverIssuer(res.Issuer), Files: res.Files}
	if res.Previous != nil {
		p := rolloverIssuer(res.Previous)
		out.Previous = &p
	}
	return out
}

func rolloverIssuer(i *registry.CAIssuer) wire.RolloverIssuer {
	out := wire.RolloverIssuer{
		KeyID: i.KeyID, State: string(i.State), Kind: i.Kind, CrossSigned: i.CrossPEM != "",
		NotAfter: i.NotAfter, CreatedAt: i.CreatedAt, ActivatedAt: i.ActivatedAt, RetiredAt: i.RetiredAt,
	}
	if c, err := pemutilCert(i.CertPEM); err == nil {
		out.Subject = c.Subject.String()
	}
	if r, err := pemutilCert(i.RootPEM); err == nil {
		out.RootFingerprint = pki.Fingerprint(r)
	}
	return out
}

func pemutilCert(s string) (*x509.Certificate, error) {
	return pemutil.ParseCertificate([]byte(s))
}
