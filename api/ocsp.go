package api

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/crypto/ocsp"

	"devpki/api/wire"
	"devpki/pkg/provision"
)

func (s *Server) routesOCSP(e *echo.Echo) {
	e.GET("/ocsp/*", s.getOCSP)
	e.GET("/ocsp", s.getOCSP)
	e.POST("/ocsp", s.postOCSP)
}

// getOCSP is GET /ocsp/{url-encoded base64 DER request} (RFC 6960
// appendix A.1).
func (s *Server) getOCSP(c echo.Context) error {
	p := strings.TrimPrefix(c.Request().URL.EscapedPath(), "/ocsp")
	p = strings.TrimPrefix(p, "/")
	raw, err := decodeOCSPPath(p)
	if err != nil {
		return ocspReply(c, &provision.OCSPAnswer{DER: ocsp.MalformedRequestErrorResponse}, s.cfg.Now())
	}
	return s.answerOCSP(c, raw)
}

// postOCSP is POST /ocsp with an application/ocsp-request body.
func (s *Server) postOCSP(c echo.Context) error {
	if mt, _, err := mime.ParseMediaType(c.Request().Header.Get(echo.HeaderContentType)); err != nil || mt != mimeOCSPRequest {
		return problem(http.StatusUnsupportedMediaType, wire.SlugBadRequest, "Unsupported media type", "send Content-Type: "+mimeOCSPRequest)
	}
	raw, err := io.ReadAll(c.Request().Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return ocspReply(c, &provision.OCSPAnswer{DER: ocsp.MalformedRequestErrorResponse}, s.cfg.Now())
	}
	return s.answerOCSP(c, raw)
}

func (s *Server) answerOCSP(c echo.Context, raw []byte) error {
	a, err := s.cfg.Revocation.OCSP(c.Request().Context(), raw)
	if err != nil {
		s.cfg.Log.Error("OCSP failed", "err", err)
		a = &provision.OCSPAnswer{DER: ocsp.InternalErrorErrorResponse}
	}
	return ocspReply(c, a, s.cfg.Now())
}

// ocspReply writes an OCSP response. Errors are OCSP responses too (HTTP
// 200), as RFC 6960 clients expect. A signed answer that may be reused
// carries the cache headers of RFC 5019 §6.2 (cacheFor: max-age and
// Expires no later than its nextUpdate, Last-Modified its thisUpdate, an
// ETag of its bytes), whether asked by GET or POST; error answers and
// answers not to be reused (an unknown serial) are no-store.
func ocspReply(c echo.Context, a *provision.OCSPAnswer, now time.Time) error {
	h := c.Response().Header()
	if maxAge := min(a.MaxAge, a.NextUpdate.Sub(now)); maxAge >= time.Second && !a.ThisUpdate.IsZero() {
		sum := sha256.Sum256(a.DER)
		cacheFor(h, now, a.ThisUpdate, maxAge, `"`+hex.EncodeToString(sum[:16])+`"`, true)
	} else {
		h.Set("Cache-Control", "no-store")
	}
	return c.Blob(http.StatusOK, mimeOCSPResponse, a.DER)
}

// decodeOCSPPath undoes the URL and base64 encoding of a GET request. Some
// clients leave '+', '/' and '=' unescaped, some send URL-safe base64.
func decodeOCSPPath(p string) ([]byte, error) {
	if p == "" {
		return nil, errors.New("empty OCSP request")
	}
	s, err := url.PathUnescape(p)
	if err != nil {
		return nil, err
	}
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("OCSP request is not base64")
}
