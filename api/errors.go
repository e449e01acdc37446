package api

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"devpki/api/client"
	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/tpm/verify"
)

// RetryAfterStoreUnavailable is the Retry-After of a 503 store-unavailable
// answer: long enough not to hammer a registry that cannot commit, short
// enough that devices notice its recovery within seconds.
const RetryAfterStoreUnavailable = 5 * time.Second

// problemError is an error that already knows its HTTP answer.
type problemError struct {
	status int
	slug   string
	title  string
	detail string
}

func (e *problemError) Error() string { return e.title + ": " + e.detail }

func problem(status int, slug, title, detail string) error {
	return &problemError{status: status, slug: slug, title: title, detail: detail}
}

// classify maps an error to its RFC 9457 answer. It is the one place that
// knows how domain errors become HTTP.
func classify(err error) (status int, slug, title string, public bool) {
	var pe *problemError
	var he *echo.HTTPError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &pe):
		return pe.status, pe.slug, pe.title, true
	case errors.Is(err, registry.ErrUnavailable):
		return http.StatusServiceUnavailable, client.SlugStoreUnavailable, "Registry cannot commit, retry later", false
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, "payload-too-large", "Request body too large", true
	case errors.Is(err, provision.ErrCloneSuspect):
		return http.StatusForbidden, client.SlugCloneSuspect, "Held for an admin: possible clone", true
	case errors.Is(err, provision.ErrTPMRequired):
		return http.StatusForbidden, client.SlugTPMRequired, "TPM attestation required", true
	case errors.Is(err, provision.ErrTPMCertifyRequired):
		return http.StatusForbidden, client.SlugTPMCertifyRequired, "TPM certification of the new key required", true
	case errors.Is(err, provision.ErrTPMDisabled):
		return http.StatusNotFound, client.SlugTPMDisabled, "TPM attestation enrollment is not enabled", true
	case errors.Is(err, verify.ErrEKUntrusted):
		return http.StatusForbidden, client.SlugTPMUntrustedEK, "TPM endorsement key not trusted", true
	case errors.Is(err, verify.ErrAKInvalid):
		return http.StatusBadRequest, client.SlugTPMInvalidAK, "TPM attestation key refused", true
	case errors.Is(err, verify.ErrActivation):
		return http.StatusForbidden, client.SlugTPMActivation, "TPM credential activation failed", true
	case errors.Is(err, verify.ErrCertify), errors.Is(err, verify.ErrCSR):
		return http.StatusForbidden, client.SlugTPMCertifyInvalid, "TPM key certification refused", true
	case errors.Is(err, verify.ErrChallengeExpired), errors.Is(err, verify.ErrChallengeNotFound):
		return http.StatusGone, client.SlugChallengeExpired, "Challenge expired or unknown, start again", true
	case errors.Is(err, verify.ErrChallengeUsed):
		return http.StatusConflict, client.SlugChallengeUsed, "Challenge already answered", true
	case errors.Is(err, verify.ErrStoreFull):
		return http.StatusServiceUnavailable, "unavailable", "Service unavailable, retry later", true
	case errors.Is(err, pki.ErrBadCSR):
		return http.StatusBadRequest, "bad-csr", "Certificate request refused", true
	case errors.Is(err, provision.ErrInvalidArgument):
		return http.StatusBadRequest, "bad-request", "Invalid argument", true
	case errors.Is(err, registry.ErrTokenInvalid):
		return http.StatusUnauthorized, "token-invalid", "Bootstrap token refused", true
	case errors.Is(err, registry.ErrTokenExpired):
		return http.StatusUnauthorized, "token-expired", "Bootstrap token expired", true
	case errors.Is(err, registry.ErrTokenSpent):
		return http.StatusUnauthorized, "token-spent", "Bootstrap token already used", true
	case errors.Is(err, registry.ErrTokenSerialMismatch), errors.Is(err, registry.ErrTokenTenantMismatch):
		return http.StatusForbidden, "token-mismatch", "Bootstrap token not valid for this device", true
	case errors.Is(err, registry.ErrRekeyRequired):
		return http.StatusConflict, client.SlugRekeyRequired, "A new key is required", true
	case errors.Is(err, registry.ErrNotRenewable):
		return http.StatusForbidden, "not-renewable", "Certificate cannot be renewed", true
	case errors.Is(err, registry.ErrDeviceNotActive):
		return http.StatusForbidden, "revoked", "Device revoked", true
	case errors.Is(err, registry.ErrSerialConflict):
		return http.StatusConflict, "serial-conflict", "Serial already enrolled", true
	case errors.Is(err, registry.ErrConflict):
		return http.StatusConflict, "conflict", "Concurrent change, retry", true
	case errors.Is(err, registry.ErrNotFound):
		return http.StatusNotFound, "not-found", "Not found", true
	case errors.As(err, &he):
		switch he.Code {
		case http.StatusNotFound:
			return he.Code, "not-found", "Not found", false
		case http.StatusMethodNotAllowed:
			return he.Code, "method-not-allowed", "Method not allowed", false
		case http.StatusRequestEntityTooLarge:
			return he.Code, "payload-too-large", "Request body too large", false
		case http.StatusServiceUnavailable, http.StatusTooManyRequests:
			return he.Code, "unavailable", "Service unavailable, retry later", false
		}
		if he.Code >= 400 && he.Code < 500 {
			return he.Code, "bad-request", http.StatusText(he.Code), false
		}
	}
	return http.StatusInternalServerError, "internal", "Internal error", false
}

// errorHandler writes every error as application/problem+json. Details of
// unknown errors are logged, never sent.
func errorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		status, slug, title, public := classify(err)
		p := client.Problem{Type: client.ProblemTypePrefix + slug, Title: title, Status: status}
		if public {
			p.Detail = err.Error()
			var pe *problemError
			if errors.As(err, &pe) {
				p.Detail = pe.detail
			}
		}
		if status >= 500 {
			log.Error("request failed", "method", c.Request().Method, "path", c.Path(), "err", err)
		}
		switch {
		case slug == client.SlugStoreUnavailable:
			c.Response().Header().Set("Retry-After", strconv.Itoa(int(RetryAfterStoreUnavailable/time.Second)))
		case status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests:
			c.Response().Header().Set("Retry-After", "1")
		}
		b, _ := json.Marshal(p)
		c.Response().Header().Set(echo.HeaderContentType, "application/problem+json")
		c.Response().WriteHeader(status)
		_, _ = c.Response().Write(b)
	}
}
