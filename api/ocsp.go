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
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
	"golang.org/x/crypto/ocsp"

	"devpki/api/wire"
)

func (s *Server) routesOCSP(e *echo.Echo) {
	e.GET("/ocsp/*", s.getOCSP)
	e.GET("/ocsp", s.getOCSP)
	e.POST("/ocsp", s.postOCSP)
}

// getOCSP is GET /ocsp/{base64 DER request} (RFC 6960 appendix A.1): the
// answer may be cached by HTTP caches until the response's nextUpdate or
// the CA's refresh interval, whichever is first.
func (s *Server) getOCSP(c echo.Context) error {
	p := strings.TrimPrefix(c.Request().URL.EscapedPath(), "/ocsp")
	p = strings.TrimPrefix(p, "/")
	raw, err := decodeOCSPPath(p)
	if err != nil {
		return s.ocspReply(c, ocsp.MalformedRequestErrorResponse, 0, true)
	}
	return s.answerOCSP(c, raw, true)
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
		return s.ocspReply(c, ocsp.MalformedRequestErrorResponse, 0, false)
	}
	return s.answerOCSP(c, raw, false)
}

func (s *Server) answerOCSP(c echo.Context, raw []byte, cacheable bool) error {
	a, err := s.cfg.Revocation.OCSP(c.Request().Context(), raw)
	if err != nil {
		s.cfg.Log.Error("OCSP failed", "err", err)
		return s.ocspReply(c, ocsp.InternalErrorErrorResponse, 0, false)
	}
	return s.ocspReply(c, a.DER, maxAgeSeconds(a.MaxAge), cacheable)
}

// ocspReply writes an OCSP response. Errors are OCSP responses too (HTTP
// 200), as RFC 6960 clients expect.
func (s *Server) ocspReply(c echo.Context, der []byte, maxAge int, cacheable bool) error {
	h := c.Response().Header()
	if cacheable && maxAge > 0 {
		sum := sha256.Sum256(der)
		h.Set("Cache-Control", "public, no-transform, must-revalidate, max-age="+strconv.Itoa(maxAge))
		h.Set("ETag", `"`+hex.EncodeToString(sum[:16])+`"`)
	} else {
		h.Set("Cache-Control", "no-store")
	}
	return c.Blob(http.StatusOK, mimeOCSPResponse, der)
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
