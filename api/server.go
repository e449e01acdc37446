// Package api is the HTTP face of the CA (echo v4): native JSON enrollment,
// the admin API, CA certificates and health. Route and handler live side by
// side, one file per resource; errors.go maps errors to RFC 9457.
package api

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// MaxBodyBytes bounds every request body.
const MaxBodyBytes = 64 << 10

// Store is the registry as the API sees it: reads only, for the admin query
// routes and health. Every state change goes through provision (Provision,
// Admin, Revocation). *sqlstore.Store implements it.
type Store interface {
	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error
	GetTenantByID(ctx context.Context, id string) (*registry.Tenant, error)
	GetTenant(ctx context.Context, name string) (*registry.Tenant, error)
	GetDevice(ctx context.Context, id string) (*registry.Device, error)
	ListDevices(ctx context.Context, f registry.DeviceFilter) ([]*registry.Device, error)
	GetCertificate(ctx context.Context, serial string) (*registry.Certificate, error)
	ListCertificates(ctx context.Context, f registry.CertFilter) ([]*registry.Certificate, error)
	ListQuarantine(ctx context.Context, f registry.QuarantineFilter) ([]*registry.Quarantine, error)
	ListTPMRoots(ctx context.Context) ([]*registry.TPMRoot, error)
	ListAudit(ctx context.Context, afterSeq int64, limit int) ([]*registry.AuditEvent, error)
	ListRefusals(ctx context.Context, afterID int64, limit int) ([]*registry.Refusal, error)
	provision.AuditReader
}

// Config wires the server. Store, Provision, Admin, Tokens, Root and Chain
// are required.
type Config struct {
	Store     Store
	Provision *provision.Service
	// Admin authenticates admin certificates and runs the admin actions.
	Admin *provision.Admin
	// Attestors are the enrollment doors' attestors (cmd/ca wires them);
	// Token is required, a nil TPM closes POST /v1/enroll/tpm.
	Attestors provision.Attestors
	// Root is the CA root served at /v1/ca/roots; Chain the issuing chain
	// (intermediate first) served at /v1/ca/chain.
	Root  *x509.Certificate
	Chain []*x509.Certificate
	// Revocation, when set, serves GET /crl and GET|POST /ocsp and backs the
	// admin revoke routes; when nil, /crl and /ocsp are not served and the
	// revoke routes answer 501.
	Revocation *provision.Revocation
	// TrustDomain is used to read admin identities from client certificates.
	TrustDomain string
	Log         *slog.Logger
	// Limits guard the enrollment and renewal doors (see Limits); the zero
	// value sets none.
	Limits Limits
	// Writers, if set, is told this server's count of enrollment and
	// renewal requests in progress (for the registry's group commit:
	// sqlstore.Options.Writers).
	Writers *WriterGauge
	// AccessLog, when set, gets one line per request (see accessLog).
	AccessLog *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Issuers, when set, replaces Root and Chain by the CA's issuers as a
	// rollover moves them (trust bundle, served chain, EST cacerts, client
	// certificates accepted); Rollover, when set, serves
	// /v1/admin/rollover/... and counts trust bundle fetches.
	Issuers  *pki.IssuerSet
	Rollover *provision.Rollover
	// Metrics, when set, counts failed authentications (see Metrics).
	Metrics Metrics
	// MetricsHandler, when set, is served at GET /metrics to admin
	// certificates of any role; nil: no /metrics.
	MetricsHandler http.Handler
}

// Server holds the handlers' dependencies.
type Server struct {
	cfg        Config
	limits     *limiter
	inflight   *inflight
	est        *estBodies // precomputed EST cacerts and csrattrs
	static     *trustView // of Config.Root and Chain
	trustCache trustCache // of Config.Issuers
}

// New returns the echo instance serving the whole API.
func New(cfg Config) (*echo.Echo, error) {
	if cfg.Store == nil || cfg.Provision == nil || cfg.Admin == nil || cfg.Attestors.Token == nil || cfg.Root == nil || len(cfg.Chain) == 0 {
		return nil, errors.New("api: Store, Provision, Admin, Attestors.Token, Root and Chain are required")
	}
	s := newServer(cfg)
	e := s.newEcho(MaxBodyBytes)
	e.Pre(s.verifyPeer)
	e.Use(secureHeaders)
	s.routesEnroll(e)
	s.routesEnrollTPM(e)
	s.routesRenew(e)
	s.routesRenewExpired(e)
	s.routesCA(e)
	s.routesCACerts(e)
	s.routesAdmin(e)
	s.routesMetrics(e)
	if err := s.routesEST(e); err != nil {
		return nil, err
	}
	if cfg.Revocation != nil {
		s.routesCRL(e)
		s.routesOCSP(e)
	}
	return e, nil
}

func newServer(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{
		cfg:      cfg,
		limits:   newLimiter(cfg.Limits, cfg.Now),
		inflight: newInflight(cfg.Limits),
		static:   staticTrust(cfg, nil),
	}
	if cfg.Writers != nil && s.inflight != nil {
		cfg.Writers.q.Store(s.inflight)
	}
	return s
}

// newEcho is an echo instance with the server's error handler, the real
// peer address for audit, and request bodies limited to limit bytes.
func (s *Server) newEcho(limit int64) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.IPExtractor = echo.ExtractIPDirect() // never trust X-Forwarded-For for audit addresses
	e.HTTPErrorHandler = errorHandler(s.cfg.Log)
	e.Pre(requestID)
	if s.cfg.AccessLog != nil {
		e.Pre(s.accessLog(s.cfg.AccessLog))
	}
	e.Pre(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if c.Request().ContentLength > limit {
				return s.refuse(c, provision.Actor{Kind: provision.ActorAnonymous}, provision.ActionRequest,
					c.Request().Method+" "+c.Request().URL.Path,
					problem(http.StatusRequestEntityTooLarge, wire.SlugPayloadTooLarge, "Request body too large",
						fmt.Sprintf("request bodies are limited to %d bytes", limit)))
			}
			c.Request().Body = http.MaxBytesReader(c.Response(), c.Request().Body, limit)
			return next(c)
		}
	})
	return e
}

// decodeJSON reads exactly one JSON object with no unknown fields.
func decodeJSON(c echo.Context, v any) error {
	if ct := c.Request().Header.Get(echo.HeaderContentType); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != echo.MIMEApplicationJSON {
			return problem(http.StatusUnsupportedMediaType, wire.SlugBadRequest, "Unsupported media type", "send Content-Type: application/json")
		}
	}
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return problem(http.StatusBadRequest, wire.SlugBadRequest, "Unreadable body", err.Error())
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return problem(http.StatusBadRequest, wire.SlugBadRequest, "Malformed JSON body", err.Error())
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		return problem(http.StatusBadRequest, wire.SlugBadRequest, "Malformed JSON body", "trailing data after the JSON object")
	}
	return nil
}

func pemCert(c *x509.Certificate) []byte {
	// Sized for the whole block up front: pem.EncodeToMemory grows its
	// buffer four times for a certificate (on every answer that issues one).
	n := base64.StdEncoding.EncodedLen(len(c.Raw))
	b := bytes.NewBuffer(make([]byte, 0, n+n/64+len("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")+1))
	pem.Encode(b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}) // writes to a bytes.Buffer do not fail
	return b.Bytes()
}

// refuse audits a request refused before it reached provision (no
// credential, an unreadable body) and returns err.
func (s *Server) refuse(c echo.Context, who provision.Actor, action provision.Action, target string, err error) error {
	if who.Source == "" {
		who.Source = c.RealIP()
	}
	cause := err
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		cause = &classedError{err, wire.SlugPayloadTooLarge}
	}
	if s.cfg.Admin != nil { // the plain-HTTP publication listener has no doors and no Admin
		s.cfg.Admin.Refuse(c.Request().Context(), who, action, target, cause)
	}
	return &auditedError{err}
}

// classedError names the refusal-log reason class of an error that does not
// name its own (provision.ReasonClass).
type classedError struct {
	err   error
	class string
}

func (e *classedError) Error() string       { return e.err.Error() }
func (e *classedError) Unwrap() error       { return e.err }
func (e *classedError) ReasonClass() string { return e.class }
