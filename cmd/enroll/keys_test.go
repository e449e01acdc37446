package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"devpki/pkg/tpm/swtpmtest"
)

func TestKeyringSoftwareRoundTrip(t *testing.T) {
	t.Parallel()
	kr := newKeyring(t.TempDir(), "")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b, err := kr.encode(key)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "ENCRYPTED PRIVATE KEY") {
		t.Fatalf("software key not encrypted:\n%s", b)
	}
	got, err := kr.parse(context.Background(), b, keyFile)
	if err != nil || !key.PublicKey.Equal(got.Public()) {
		t.Fatalf("parse: %v", err)
	}
	if s := keyStorage(got, "auto"); s != "software (encrypted PEM)" {
		t.Errorf("keyStorage = %q", s)
	}
}

// TestKeyringBadTPMReference: a damaged reference is an error that says what
// is wrong, never a silent fallback to another key.
func TestKeyringBadTPMReference(t *testing.T) {
	t.Parallel()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	for _, tt := range []struct {
		name string
		blk  *pem.Block
		want string
	}{
		{"no name", &pem.Block{Type: tpmKeyBlock, Bytes: pub}, "without a Key-Name"},
		{"bad public key", &pem.Block{Type: tpmKeyBlock, Headers: map[string]string{"Key-Name": "device-1"}, Bytes: []byte("junk")}, "TPM key reference"},
		{"no tpm.json", &pem.Block{Type: tpmKeyBlock, Headers: map[string]string{"Key-Name": "device-1"}, Bytes: pub}, "pass --tpm"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			kr := newKeyring(t.TempDir(), "")
			_, err := kr.parse(context.Background(), pem.EncodeToMemory(tt.blk), keyFile)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
}

// TestKeyringTPM: a TPM key is stored as a reference that loads back to the
// same key; a reference to another public key, or to a deleted blob, is
// refused; pruning keeps only the referenced keys.
func TestKeyringTPM(t *testing.T) {
	sw := swtpmtest.Start(t)
	ctx := context.Background()
	dir := t.TempDir()
	kr := newKeyring(dir, "")
	kr.tpmSpec = sw.Spec()
	defer kr.close()
	tp, err := kr.openTPM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := newTPMKey(ctx, tp, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := kr.encode(key)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(ref), "PRIVATE") {
		t.Fatalf("reference holds private material:\n%s", ref)
	}
	if _, err := os.Stat(filepath.Join(dir, passwordFile)); !os.IsNotExist(err) {
		t.Errorf("a key password was made for a TPM key: %v", err)
	}
	got, err := kr.parse(ctx, ref, keyFile)
	if err != nil || !key.Public().(*ecdsa.PublicKey).Equal(got.Public()) {
		t.Fatalf("parse: %v", err)
	}
	if s := keyStorage(got, sw.Spec()); !strings.HasPrefix(s, "TPM (") {
		t.Errorf("keyStorage = %q", s)
	}

	// The reference names the key but carries another public key.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	blk, _ := pem.Decode(ref)
	blk.Bytes, _ = x509.MarshalPKIXPublicKey(&other.PublicKey)
	if _, err := kr.parse(ctx, pem.EncodeToMemory(blk), keyFile); err == nil || !strings.Contains(err.Error(), "not the one referenced") {
		t.Fatalf("mismatched reference: %v", err)
	}

	// Pruning keeps the key device.key refers to and drops the others.
	spare, _, err := newTPMKey(ctx, tp, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, keyFile), ref, 0o600); err != nil {
		t.Fatal(err)
	}
	kr.pruneTPMKeys(ctx, t.Logf)
	names, err := tp.KeyNames(ctx)
	if err != nil || len(names) != 1 || names[0] != key.name {
		t.Fatalf("after prune: %v %v; want only %s", names, err, key.name)
	}
	spareRef, _ := kr.encode(spare)
	if _, err := kr.parse(ctx, spareRef, keyFile); err == nil {
		t.Fatal("a pruned key still loads")
	}
}
