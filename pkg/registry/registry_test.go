package registry_test

import (
	"errors"
	"testing"
	"time"

	"devpki/pkg/registry"
)

func TestFoldSerial(t *testing.T) {
	for in, want := range map[string]string{
		"DEV-0001": "dev-0001", "dev-0001": "dev-0001", "Sn.A_b-9": "sn.a_b-9", "": "", "abc": "abc",
	} {
		if got := registry.FoldSerial(in); got != want {
			t.Errorf("FoldSerial(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestTokenSpendable: the one token-expiry rule. A zero expiry is expired
// (fail closed), so is an expiry at or before now; no uses left is spent.
func TestTokenSpendable(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name string
		tok  registry.Token
		want error
	}{
		{"live", registry.Token{ExpiresAt: now.Add(time.Minute), UsesLeft: 1}, nil},
		{"zero expiry", registry.Token{UsesLeft: 1}, registry.ErrTokenExpired},
		{"expires now", registry.Token{ExpiresAt: now, UsesLeft: 1}, registry.ErrTokenExpired},
		{"expired", registry.Token{ExpiresAt: now.Add(-time.Second), UsesLeft: 1}, registry.ErrTokenExpired},
		{"no uses", registry.Token{ExpiresAt: now.Add(time.Minute)}, registry.ErrTokenSpent},
		{"expired and no uses", registry.Token{ExpiresAt: now.Add(-time.Minute)}, registry.ErrTokenExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.tok.Spendable(now); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Spendable = %v, want %v", err, tc.want)
			}
		})
	}
}
