package registry

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrInvalidReason is wrapped by InvalidReasonError.
var ErrInvalidReason = errors.New("registry: invalid revocation reason")

// reasonNames are the RFC 5280 CRLReason names, indexed by code; code 7 is
// unassigned.
var reasonNames = [...]string{
	ReasonUnspecified:          "unspecified",
	ReasonKeyCompromise:        "keyCompromise",
	ReasonCACompromise:         "cACompromise",
	ReasonAffiliationChanged:   "affiliationChanged",
	ReasonSuperseded:           "superseded",
	ReasonCessationOfOperation: "cessationOfOperation",
	ReasonCertificateHold:      "certificateHold",
	ReasonRemoveFromCRL:        "removeFromCRL",
	ReasonPrivilegeWithdrawn:   "privilegeWithdrawn",
	ReasonAACompromise:         "aACompromise",
}

// InvalidReasonError is a revocation reason that is not an RFC 5280
// CRLReason (0–10 except 7). It wraps ErrInvalidReason.
type InvalidReasonError struct {
	Reason string // as given
}

func (e *InvalidReasonError) Error() string {
	return fmt.Sprintf("invalid revocation reason %q: valid reasons are %s (or their RFC 5280 codes)",
		e.Reason, strings.Join(ReasonNames(), ", "))
}

// Unwrap returns ErrInvalidReason.
func (e *InvalidReasonError) Unwrap() error { return ErrInvalidReason }

// ValidReason returns nil for an RFC 5280 CRLReason code and an
// *InvalidReasonError otherwise.
func ValidReason(code int) error {
	if code < 0 || code >= len(reasonNames) || reasonNames[code] == "" {
		return &InvalidReasonError{Reason: strconv.Itoa(code)}
	}
	return nil
}

// ReasonName returns the RFC 5280 name of a valid code, or its decimal form.
func ReasonName(code int) string {
	if ValidReason(code) != nil {
		return strconv.Itoa(code)
	}
	return reasonNames[code]
}

// ReasonNames lists the valid reason names in code order.
func ReasonNames() []string {
	out := make([]string, 0, len(reasonNames))
	for _, n := range reasonNames {
		if n != "" {
			out = append(out, n)
		}
	}
	return out
}

// ParseReason accepts an RFC 5280 reason name (case-insensitive, such as
// "keyCompromise") or its decimal code; an empty string is unspecified.
func ParseReason(s string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return ReasonUnspecified, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if ValidReason(n) != nil {
			return 0, &InvalidReasonError{Reason: s}
		}
		return n, nil
	}
	for code, n := range reasonNames {
		if n != "" && strings.EqualFold(n, s) {
			return code, nil
		}
	}
	return 0, &InvalidReasonError{Reason: s}
}
