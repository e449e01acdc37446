package api

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/provision"

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
	e.GET("/crl/:kid", s.getIssuerCRL)
	e.HEAD("/crl/:kid", s.getIssuerCRL)
	e.GET("/crl/p/:n", s.getPartitionCRL)
	e.HEAD("/crl/p/:n", s.getPartitionCRL)
}

// getCRL is GET /crl: the current DER CRL from memory, with cache headers
// (cacheFor) that end no later than the CRL's nextUpdate nor the CA's
// refresh interval, so caches revalidate soon after a revocation; a
// matching If-None-Match gets 304.
func (s *Server) getCRL(c echo.Context) error {
	crl, err := s.cfg.Revocation.CRL(c.Request().Context())
	if err != nil {
		return err
	}
	return s.serveCRL(c, crl)
}

// getPartitionCRL is GET /crl/p/<n>: partition n's CRL (RFC 5280 §5.2.5),
// the one a certificate whose CRL distribution point names this URL is
// checked against, with the cache headers of /crl. A partition that is
// not a number from 1 to pki.MaxCRLPartitions (or a CA without partitions)
// is 404 not-found, saying so.
func (s *Server) getPartitionCRL(c echo.Context) error {
	n, err := pki.ParseCRLPartition(c.Param("n"))
	if err != nil {
		return fmt.Errorf("%w: %w", provision.ErrNoCRLPartition, err)
	}
	crl, err := s.cfg.Revocation.PartitionCRL(c.Request().Context(), n)
	if err != nil {
		return err
	}
	return s.serveCRL(c, crl)
}

func (s *Server) serveCRL(c echo.Context, crl *provision.CRL) error {
	now := s.cfg.Now()
	cacheFor(c.Response().Header(), now, crl.ThisUpdate, s.cfg.Revocation.MaxAge(crl.NextUpdate, now), crl.ETag, false)
	if etagMatch(c.Request().Header.Get("If-None-Match"), crl.ETag) {
		return c.NoContent(http.StatusNotModified)
	}
	return c.Blob(http.StatusOK, mimeCRL, crl.DER)
}

// cacheFor sets the HTTP cache headers of a CRL or OCSP answer made at
// thisUpdate that caches may keep for maxAge from now (the caller bounds
// it by the answer's nextUpdate): Cache-Control public, max-age,
// no-transform (plus must-revalidate, RFC 5019 §6.2, for OCSP); Expires at
// the end of max-age, so never past nextUpdate; Last-Modified thisUpdate;
// the ETag when there is one.
func cacheFor(h http.Header, now, thisUpdate time.Time, maxAge time.Duration, etag string, mustRevalidate bool) {
	n := maxAgeSeconds(maxAge)
	cc := "public, max-age=" + strconv.Itoa(n) + ", no-transform"
	if mustRevalidate {
		cc += ", must-revalidate"
	}
	h.Set("Cache-Control", cc)
	h.Set("Expires", now.Add(time.Duration(n)*time.Second).UTC().Format(http.TimeFormat))
	h.Set("Last-Modified", thisUpdate.UTC().Format(http.TimeFormat))
	if etag != "" {
		h.Set("ETag", etag)
	}
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
