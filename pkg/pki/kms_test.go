package pki_test

import (
	"testing"

	"devpki/pkg/pki"
)

func TestRedactKeyURI(t *testing.T) {
	for in, want := range map[string]string{
		"pkcs11:token=a;pin-value=1234;object=k":  "pkcs11:token=a;pin-value=REDACTED;object=k",
		"pkcs11:token=a;object=k?pin-value=12%34": "pkcs11:token=a;object=k?pin-value=REDACTED",
		"pkcs11:token=a?pin-source=/etc/pin":      "pkcs11:token=a?pin-source=/etc/pin",
		"softkms:path=/x/intermediate.key":        "softkms:path=/x/intermediate.key",
	} {
		if got := pki.RedactKeyURI(in); got != want {
			t.Errorf("RedactKeyURI(%q) = %q, want %q", in, got, want)
		}
	}
}
