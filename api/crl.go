package api

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// MIME types of RFC 5280 CRLs and RFC 6960 OCSP messages.
const (
	mimeCRL          = "application/pkix-crl"
	mimeOCSPRequest  = "application/ocsp-request"
	mimeOCSPResponse = "application/ocsp-response"
)

func (s *Server) routesCRL(e *echo.Echo) {
	e.GET("/crl", s.getCRL)
	e.HEAD("/crl", s.getCRL)
}

// getCRL is GET /crl: the current DER CRL from memory, with an ETag (a
// matching If-None-Match gets 304) and a max-age that ends no later than
// the CRL's nextUpdate nor the CA's refresh interval, so caches revalidate
// soon after a revocation.
func (s *Server) getCRL(c echo.Context) error {
	crl, err := s.cfg.Revocation.CRL(c.Request().Context())
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	h := c.Response().Header()
	h.Set("ETag", crl.ETag)
	h.Set("Cache-Control", "public, no-transform, max-age="+strconv.Itoa(maxAgeSeconds(s.cfg.Revocation.MaxAge(crl.NextUpdate, now))))
	h.Set("Last-Modified", crl.ThisUpdate.UTC().Format(http.TimeFormat))
	h.Set("Expires", crl.NextUpdate.UTC().Format(http.TimeFormat))
	if etagMatch(c.Request().Header.Get("If-None-Match"), crl.ETag) {
		return c.NoContent(http.StatusNotModified)
	}
	return c.Blob(http.StatusOK, mimeCRL, crl.DER)
}

// etagMatch implements If-None-Match's weak comparison for a list of tags.
func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}

func maxAgeSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int(d / time.Second)
}
