package provision

import (
	"errors"
	"time"

	"devpki/pkg/registry"
)

// Metrics receives what the pipeline decided, for monitoring (cmd/ca wires
// a Prometheus implementation, pkg/metrics). Each method is called once, at
// the one place the event is decided, and must be cheap and safe for
// concurrent use. Every label value it is given comes from a small fixed
// set (methods, Outcome classes, RFC 5280 reason names, OCSP statuses),
// never a serial or a tenant. A nil Metrics records nothing.
type Metrics interface {
	// Enrollment counts one enrollment by method (MethodToken, MethodTPM,
	// MethodIDevID, or "other") with its Outcome.
	Enrollment(method, result string)
	// Renewal counts one renewal with its Outcome.
	Renewal(result string)
	// Revocation counts one revoked certificate by RFC 5280 reason name.
	Revocation(reason string)
	// CRLBuilt reports a CRL built and signed: its number and how long the
	// build took.
	CRLBuilt(number int64, took time.Duration)
	// OCSPResponse counts one OCSP answer: OCSPGood, OCSPRevoked,
	// OCSPUnknown, OCSPMalformed, OCSPUnauthorized or OCSPError.
	OCSPResponse(status string)
}

// OCSP answer classes given to Metrics.OCSPResponse.
const (
	OCSPGood         = "good"
	OCSPRevoked      = "revoked"
	OCSPUnknown      = "unknown"
	OCSPMalformed    = "malformed"
	OCSPUnauthorized = "unauthorized"
	OCSPError        = "error"
)

// OutcomeOK is the Outcome of a success.
const OutcomeOK = "ok"

// Outcome classifies the result of an enrollment or renewal for metrics:
// OutcomeOK, or a short stable word for the refusal — the refusal log's
// ReasonClass, with the refusals it leaves as "refused" named too. The set
// is small and fixed.
func Outcome(err error) string {
	if err == nil {
		return OutcomeOK
	}
	var rl *RateLimitError
	switch {
	case errors.As(err, &rl):
		return "rate-limited"
	case errors.Is(err, ErrCloneSuspect):
		return "clone-suspect"
	case errors.Is(err, ErrDeviceRevoked):
		return "device-revoked"
	case errors.Is(err, registry.ErrSerialConflict):
		return "serial-conflict"
	case errors.Is(err, registry.ErrNotRenewable):
		return "not-renewable"
	case errors.Is(err, registry.ErrRekeyRequired):
		return "rekey-required"
	case errors.Is(err, registry.ErrDeviceNotActive):
		return "device-not-active"
	}
	return ReasonClass(err)
}

// attestorMethod names the method of an attestor for metrics, before its
// admission is known (a refused admission has none).
func attestorMethod(a Attestor) string {
	switch a.(type) {
	case TokenAttestor, *TokenAttestor:
		return MethodToken
	case TPMAttestor, *TPMAttestor:
		return MethodTPM
	case IDevIDAttestor, *IDevIDAttestor:
		return MethodIDevID
	}
	return "other"
}

// noMetrics is the Metrics of a nil Config.Metrics.
type noMetrics struct{}

func (noMetrics) Enrollment(string, string)     {}
func (noMetrics) Renewal(string)                {}
func (noMetrics) Revocation(string)             {}
func (noMetrics) CRLBuilt(int64, time.Duration) {}
func (noMetrics) OCSPResponse(string)           {}
