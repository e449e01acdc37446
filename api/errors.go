package api

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"devpki/api/wire"
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

// ReasonClass is the refusal log's reason class of a request refused by
// the API: its problem slug.
func (e *problemError) ReasonClass() string { return e.slug }

// requestError is a request api refused itself, before provision saw it (an
// unreadable query argument): it maps as the error it wraps.
type requestError struct{ err error }

func (e *requestError) Error() string { return e.err.Error() }
func (e *requestError) Unwrap() error { return e.err }

// auditedError is a refusal already audited (Server.refuse).
type auditedError struct{ err error }

func (e *auditedError) Error() string { return e.err.Error() }
func (e *auditedError) Unwrap() error { return e.err }

// refusedByAPI reports whether err was made in package api (a malformed
// request) and not audited yet: provision audits its own refusals.
func refusedByAPI(err error) bool {
	var ae *auditedError
	if errors.As(err, &ae) {
		return false
	}
	var pe *problemError
	var re *requestError
	var mbe *http.MaxBytesError
	return errors.As(err, &pe) || errors.As(err, &re) || errors.As(err, &mbe)
}

func problem(status int, slug, title, detail string) error {
	return &problemError{status: status, slug: slug, title: title, detail: detail}
}

// classify maps an error to its RFC 9457 answer. It is the one place that
// knows how domain errors become HTTP.
func classify(err error) (status int, slug, title string, public bool) {
	var pe *problemError
	var he *echo.HTTPError
	var mbe *http.MaxBytesError
	var ire *registry.InvalidReasonError
	switch {
	case errors.As(err, &pe):
		return pe.status, pe.slug, pe.title, true
	case errors.Is(err, provision.ErrRateLimited):
		return http.StatusTooManyRequests, wire.SlugRateLimited, "Too many requests, retry later", true
	case errors.Is(err, registry.ErrUnavailable):
		return http.StatusServiceUnavailable, wire.SlugStoreUnavailable, "Registry cannot commit, retry later", false
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, wire.SlugPayloadTooLarge, "Request body too large", true
	case errors.Is(err, provision.ErrUnauthenticated):
		return http.StatusUnauthorized, wire.SlugUnauthorized, "Credential required", true
	case errors.Is(err, registry.ErrRolloverOrder):
		return http.StatusConflict, wire.SlugRolloverOrder, "CA rollover step out of order", true
	case errors.Is(err, provision.ErrForbidden):
		return http.StatusForbidden, wire.SlugForbidden, "Forbidden", true
	case errors.As(err, &ire):
		return http.StatusBadRequest, wire.SlugBadReason, "Invalid revocation reason", true
	case errors.Is(err, provision.ErrCloneSuspect):
		return http.StatusForbidden, wire.SlugCloneSuspect, "Held for an admin: possible clone", true
	case errors.Is(err, provision.ErrDeviceRevoked):
		return http.StatusConflict, wire.SlugDeviceRevoked, "Device revoked by an administrator", true
	case errors.Is(err, provision.ErrTPMRequired):
		return http.StatusForbidden, wire.SlugTPMRequired, "TPM attestation required", true
	case errors.Is(err, provision.ErrIDevIDRequired):
		return http.StatusUnauthorized, wire.SlugIDevIDRequired, "IDevID client certificate required", true
	case errors.Is(err, provision.ErrIDevIDUnknownManufacturer):
		return http.StatusForbidden, wire.SlugIDevIDUnknownManufacturer, "IDevID from an unknown manufacturer", true
	case errors.Is(err, provision.ErrIDevIDInvalid):
		return http.StatusForbidden, wire.SlugIDevIDInvalid, "IDevID certificate refused", true
	case errors.Is(err, provision.ErrIDevIDSerialMismatch):
		return http.StatusForbidden, wire.SlugIDevIDSerialMismatch, "CSR serial is not the IDevID's", true
	case errors.Is(err, provision.ErrRenewGraceExpired):
		return http.StatusForbidden, wire.SlugRenewGraceExpired, "Expired beyond the renewal grace period: re-enroll", true
	case errors.Is(err, provision.ErrExpiredProof):
		return http.StatusForbidden, wire.SlugRenewProofInvalid, "Proof of possession refused", true
	case errors.Is(err, provision.ErrTenantPolicy):
		return http.StatusForbidden, wire.SlugTenantPolicy, "Refused by the tenant's policy", true
	case errors.Is(err, provision.ErrTPMCertifyRequired):
		return http.StatusForbidden, wire.SlugTPMCertifyRequired, "TPM certification of the new key required", true
	case errors.Is(err, provision.ErrNoCRLPartition):
		return http.StatusNotFound, wire.SlugNotFound, "No such CRL partition", true
	case errors.Is(err, provision.ErrTPMDisabled):
		return http.StatusNotFound, wire.SlugTPMDisabled, "TPM attestation enrollment is not enabled", true
	case errors.Is(err, verify.ErrEKUntrusted):
		return http.StatusForbidden, wire.SlugTPMUntrustedEK, "TPM endorsement key not trusted", true
	case errors.Is(err, verify.ErrAKInvalid):
		return http.StatusBadRequest, wire.SlugTPMInvalidAK, "TPM attestation key refused", true
	case errors.Is(err, verify.ErrActivation):
		return http.StatusForbidden, wire.SlugTPMActivation, "TPM credential activation failed", true
	case errors.Is(err, verify.ErrCertify), errors.Is(err, verify.ErrCSR):
		return http.StatusForbidden, wire.SlugTPMCertifyInvalid, "TPM key certification refused", true
	case errors.Is(err, verify.ErrChallengeExpired), errors.Is(err, verify.ErrChallengeNotFound):
		return http.StatusGone, wire.SlugChallengeExpired, "Challenge expired or unknown, start again", true
	case errors.Is(err, verify.ErrChallengeUsed):
		return http.StatusConflict, wire.SlugChallengeUsed, "Challenge already answered", true
	case errors.Is(err, verify.ErrStoreFull):
		return http.StatusServiceUnavailable, wire.SlugUnavailable, "Service unavailable, retry later", true
	case errors.Is(err, pki.ErrBadSerial): // before ErrBadCSR, which a refused CSR serial also wraps
		return http.StatusBadRequest, wire.SlugBadSerial, "Serial refused", true
	case errors.Is(err, pki.ErrBadMAC): // before ErrBadCSR, which a refused CSR MAC also wraps
		return http.StatusBadRequest, wire.SlugBadMAC, "MAC address refused", true
	case errors.Is(err, pki.ErrBadCSR):
		return http.StatusBadRequest, wire.SlugBadCSR, "Certificate request refused", true
	case errors.Is(err, provision.ErrInvalidArgument):
		return http.StatusBadRequest, wire.SlugBadRequest, "Invalid argument", true
	case errors.Is(err, registry.ErrTokenInvalid):
		return http.StatusUnauthorized, wire.SlugTokenInvalid, "Bootstrap token refused", true
	case errors.Is(err, registry.ErrTokenExpired):
		return http.StatusUnauthorized, wire.SlugTokenExpired, "Bootstrap token expired", true
	case errors.Is(err, registry.ErrTokenSpent):
		return http.StatusUnauthorized, wire.SlugTokenSpent, "Bootstrap token already used", true
	case errors.Is(err, registry.ErrTokenSerialMismatch), errors.Is(err, registry.ErrTokenTenantMismatch):
		return http.StatusForbidden, wire.SlugTokenMismatch, "Bootstrap token not valid for this device", true
	case errors.Is(err, registry.ErrRekeyRequired):
		return http.StatusConflict, wire.SlugRekeyRequired, "A new key is required", true
	case errors.Is(err, registry.ErrNotRenewable):
		return http.StatusForbidden, wire.SlugNotRenewable, "Certificate cannot be renewed", true
	case errors.Is(err, registry.ErrDeviceNotActive):
		return http.StatusForbidden, wire.SlugRevoked, "Device revoked", true
	case errors.Is(err, registry.ErrSerialConflict):
		return http.StatusConflict, wire.SlugSerialConflict, "Serial already enrolled", true
	case errors.Is(err, registry.ErrAlreadyExists):
		return http.StatusConflict, wire.SlugConflict, "Already exists", true
	case errors.Is(err, registry.ErrNotRevoked):
		return http.StatusConflict, wire.SlugConflict, "Device not revoked", true
	case errors.Is(err, registry.ErrClaimNotHeld):
		return http.StatusConflict, wire.SlugConflict, "Claim not held", true
	case errors.Is(err, registry.ErrClaimStale):
		return http.StatusConflict, wire.SlugConflict, "Enrolled device changed", true
	case errors.Is(err, registry.ErrEKConflict):
		return http.StatusConflict, wire.SlugConflict, "TPM bound to another device", true
	case errors.Is(err, registry.ErrConflict):
		return http.StatusConflict, wire.SlugConflict, "Concurrent change, retry", true
	case errors.Is(err, registry.ErrNotFound):
		return http.StatusNotFound, wire.SlugNotFound, "Not found", true
	case errors.As(err, &he):
		switch he.Code {
		case http.StatusNotFound:
			return he.Code, wire.SlugNotFound, "Not found", false
		case http.StatusMethodNotAllowed:
			return he.Code, wire.SlugMethodNotAllowed, "Method not allowed", false
		case http.StatusRequestEntityTooLarge:
			return he.Code, wire.SlugPayloadTooLarge, "Request body too large", false
		case http.StatusServiceUnavailable, http.StatusTooManyRequests:
			return he.Code, wire.SlugUnavailable, "Service unavailable, retry later", false
		}
		if he.Code >= 400 && he.Code < 500 {
			return he.Code, wire.SlugBadRequest, http.StatusText(he.Code), false
		}
	}
	return http.StatusInternalServerError, wire.SlugInternal, "Internal error", false
}

// errorHandler writes every error as application/problem+json, except on
// the EST routes (estError). Details of unknown errors are logged, never
// sent.
func errorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		status, slug, title, public := classify(err)
		p := wire.Problem{Type: wire.ProblemTypePrefix + slug, Title: title, Status: status,
			RequestID: stringOf(c, ctxRequestID)}
		c.Set(ctxProblem, slug)
		if public {
			p.Detail = err.Error()
			var pe *problemError
			if errors.As(err, &pe) {
				p.Detail = pe.detail
			}
		}
		if status >= 500 && status != http.StatusNotImplemented {
			log.Error("request failed", "request_id", p.RequestID, "method", c.Request().Method, "path", c.Path(), "err", err)
		}
		var rl *provision.RateLimitError
		switch {
		case errors.As(err, &rl):
			c.Response().Header().Set("Retry-After", strconv.Itoa(int(max(time.Second, rl.RetryAfter+time.Second-1)/time.Second)))
		case slug == wire.SlugStoreUnavailable:
			c.Response().Header().Set("Retry-After", strconv.Itoa(int(RetryAfterStoreUnavailable/time.Second)))
		case status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests:
			c.Response().Header().Set("Retry-After", "1")
		}
		if isEST(c.Request().URL.Path) {
			estError(c, &p)
			return
		}
		b, _ := json.Marshal(p)
		c.Response().Header().Set(echo.HeaderContentType, "application/problem+json")
		c.Response().WriteHeader(status)
		_, _ = c.Response().Write(b)
	}
}

// isEST reports whether path is an EST route (api/est.go).
func isEST(path string) bool {
	return path == ESTPrefix || strings.HasPrefix(path, ESTPrefix+"/")
}

// estError writes p, classified as for every route, the way RFC 7030
// §4.2.3 asks of an EST server: the status code, and a human-readable
// text/plain body, "<slug>: <detail>" (the title when the detail is not
// public), then "request_id: <id>". A 401 challenges for HTTP Basic, whose password is the
// bootstrap token. A clone suspect held for an admin keeps its 403: the
// pipeline answers it as final until an admin acts, not as the 202
// "retry later" of a pending manual approval, which would have EST
// clients poll a claim that may never be released.
func estError(c echo.Context, p *wire.Problem) {
	if p.Status == http.StatusUnauthorized {
		c.Response().Header().Set("WWW-Authenticate", estRealm)
	}
	msg := p.Detail
	if msg == "" {
		msg = p.Title
	}
	c.Response().Header().Set(echo.HeaderContentType, echo.MIMETextPlainCharsetUTF8)
	c.Response().WriteHeader(p.Status)
	_, _ = c.Response().Write([]byte(strings.TrimPrefix(p.Type, wire.ProblemTypePrefix) + ": " + msg + "\nrequest_id: " + p.RequestID + "\n"))
}
