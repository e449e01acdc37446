package api

import (
	"errors"

	"github.com/labstack/echo/v4"
)

// PublicMaxBodyBytes bounds request bodies on the plain-HTTP publication
// listener: the only body it takes is an OCSP request, a few hundred bytes.
const PublicMaxBodyBytes = 8 << 10

// NewPublic returns the handler of the plain-HTTP publication listener
// (`ca serve --http-listen`), which relying parties reach without trusting
// the CA's TLS certificate first: GET|HEAD /crl, OCSP (POST /ocsp and GET
// /ocsp/<url-encoded base64 request>, RFC 6960 appendix A), and the CA
// certificates (/v1/ca/roots and /v1/ca/chain as PEM, /ca.crt as DER for
// AIA caIssuers). Every other path is 404: nothing that authenticates or
// changes state is served in the clear. Partition CRLs are at
// /crl/p/<n>. The handlers are those of New. Root,
// Chain and Revocation are required; Log and Now as for New; the other
// fields are unused.
func NewPublic(cfg Config) (*echo.Echo, error) {
	if cfg.Root == nil || len(cfg.Chain) == 0 || cfg.Revocation == nil {
		return nil, errors.New("api: public listener: Root, Chain and Revocation are required")
	}
	s := newServer(cfg)
	e := s.newEcho(PublicMaxBodyBytes)
	s.routesCACerts(e)
	s.routesCRL(e)
	s.routesOCSP(e)
	return e, nil
}
