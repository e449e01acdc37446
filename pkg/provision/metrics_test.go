package provision

import (
	"errors"
	"fmt"
	"testing"

	"devpki/pkg/pki"
	"devpki/pkg/registry"
)

func TestOutcome(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, OutcomeOK},
		{fmt.Errorf("unknown bootstrap token: %w", registry.ErrTokenInvalid), "token-invalid"},
		{fmt.Errorf("x: %w", registry.ErrTokenSpent), "token-spent"},
		{&RateLimitError{Scope: "tenant acme"}, "rate-limited"},
		{&heldError{serial: "S", id: "q"}, "clone-suspect"},
		{fmt.Errorf("d: %w", ErrDeviceRevoked), "device-revoked"},
		{fmt.Errorf("s: %w", registry.ErrSerialConflict), "serial-conflict"},
		{fmt.Errorf("c: %w", registry.ErrNotRenewable), "not-renewable"},
		{fmt.Errorf("c: %w", registry.ErrRekeyRequired), "rekey-required"},
		{fmt.Errorf("c: %w", pki.ErrBadCSR), "bad-csr"},
		{fmt.Errorf("c: %w", registry.ErrUnavailable), "store-unavailable"},
		{errors.New("something else entirely"), "refused"},
	} {
		if got := Outcome(c.err); got != c.want {
			t.Errorf("Outcome(%v) = %q, want %q", c.err, got, c.want)
		}
	}
	for _, c := range []struct {
		a    Attestor
		want string
	}{{TokenAttestor{}, MethodToken}, {&TPMAttestor{}, MethodTPM}, {IDevIDAttestor{}, MethodIDevID}, {nil, "other"}} {
		if got := attestorMethod(c.a); got != c.want {
			t.Errorf("attestorMethod(%T) = %q, want %q", c.a, got, c.want)
		}
	}
}
