//go:build cgo

package softhsmtest

import (
	"context"
	"sort"
	"testing"

	"github.com/ThalesGroup/crypto11"
	"go.step.sm/crypto/kms"
	kmsapi "go.step.sm/crypto/kms/apiv1"
	_ "go.step.sm/crypto/kms/pkcs11" // the PKCS#11 key manager
)

// KeyLabels lists the labels of the key pairs in the token, sorted. It logs
// in and out through the module in this process: SOFTHSM2_CONF must name
// the token's configuration (Setenv), and no other context of this process
// should be open (a login is shared by a process's sessions).
func (tok *Token) KeyLabels(t testing.TB) []string {
	t.Helper()
	c, err := crypto11.Configure(&crypto11.Config{Path: Module, TokenLabel: tok.Label, Pin: PIN})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pairs, err := c.FindAllKeyPairs()
	if err != nil {
		t.Fatal(err)
	}
	var labels []string
	for _, p := range pairs {
		l, err := c.GetAttribute(p, crypto11.CkaLabel)
		if err != nil {
			t.Fatal(err)
		}
		labels = append(labels, string(l.Value))
	}
	sort.Strings(labels)
	return labels
}

// MakeKey makes a key pair in the token as an HSM administrator would,
// outside devpki: name is a "pkcs11:id=…;object=…" URI.
func (tok *Token) MakeKey(t testing.TB, name string, alg kmsapi.SignatureAlgorithm) {
	t.Helper()
	km, err := kms.New(context.Background(), kmsapi.Options{Type: kmsapi.PKCS11, URI: tok.URI()})
	if err != nil {
		t.Fatal(err)
	}
	defer km.Close()
	if _, err := km.CreateKey(&kmsapi.CreateKeyRequest{Name: name, SignatureAlgorithm: alg}); err != nil {
		t.Fatal(err)
	}
}
