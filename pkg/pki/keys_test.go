//lint:file-ignore SA1019 these tests build invalid ECDSA keys from raw coordinates on purpose

package pki_test

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
)

// rsaE3Key is a 2048-bit RSA key with public exponent 3, which
// rsa.GenerateKey cannot make.
var rsaE3Key = sync.OnceValue(func() *rsa.PrivateKey {
	three := big.NewInt(3)
	one := big.NewInt(1)
	prime := func() *big.Int {
		for {
			p, err := rand.Prime(rand.Reader, 1024)
			if err != nil {
				panic(err)
			}
			if new(big.Int).Mod(new(big.Int).Sub(p, one), three).Sign() != 0 {
				return p
			}
		}
	}
	for {
		p, q := prime(), prime()
		n := new(big.Int).Mul(p, q)
		if p.Cmp(q) == 0 || n.BitLen() != 2048 {
			continue
		}
		phi := new(big.Int).Mul(new(big.Int).Sub(p, one), new(big.Int).Sub(q, one))
		d := new(big.Int).ModInverse(three, phi)
		k := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: n, E: 3}, D: d, Primes: []*big.Int{p, q}}
		k.Precompute()
		if err := k.Validate(); err != nil {
			panic(err)
		}
		return k
	}
})

// oddModulus is a public key of exactly bits bits; nobody holds its private
// key, which KeyPolicy never needs.
func oddModulus(t *testing.T, bits int, e int) *rsa.PublicKey {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), uint(bits-1)))
	if err != nil {
		t.Fatal(err)
	}
	n.SetBit(n, bits-1, 1).SetBit(n, 0, 1)
	return &rsa.PublicKey{N: n, E: e}
}

// offCurveSPKI is the DER SubjectPublicKeyInfo of the P-256 "point" (1, 1),
// which is not on the curve.
func offCurveSPKI(t *testing.T) []byte {
	t.Helper()
	point := make([]byte, 65)
	point[0], point[32], point[64] = 4, 1, 1
	der, err := asn1.Marshal(struct {
		Algo pkix.AlgorithmIdentifier
		Key  asn1.BitString
	}{
		Algo: pkix.AlgorithmIdentifier{
			Algorithm:  asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1},
			Parameters: asn1.RawValue{FullBytes: mustMarshal(t, asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7})},
		},
		Key: asn1.BitString{Bytes: point, BitLength: 8 * len(point)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestKeyPolicy(t *testing.T) {
	t.Parallel()
	k := keys()
	all := pki.KeyPolicy{AllowP384: true, AllowEd25519: true, AllowRSA: true}
	rsa2048 := k["rsa2048"].Public().(*rsa.PublicKey)
	p256 := k["p256"].Public().(*ecdsa.PublicKey)
	tests := []struct {
		name    string
		policy  pki.KeyPolicy
		pub     crypto.PublicKey
		wantErr string // "" = accepted
	}{
		{"zero value: P-256", pki.KeyPolicy{}, p256, ""},
		{"zero value: P-384 refused", pki.KeyPolicy{}, k["p384"].Public(), "P-384 keys are not allowed"},
		{"P-384 allowed", pki.KeyPolicy{AllowP384: true}, k["p384"].Public(), ""},
		{"P-521 refused even with everything allowed", all, k["p521"].Public(), "curve P-521 is not allowed"},
		{"P-224 refused", all, &ecdsa.PublicKey{Curve: elliptic.P224(), X: elliptic.P224().Params().Gx, Y: elliptic.P224().Params().Gy}, "curve P-224 is not allowed"},
		{"off-curve P-256 point", all, &ecdsa.PublicKey{Curve: elliptic.P256(), X: big.NewInt(1), Y: big.NewInt(1)}, "not a valid point on P-256"},
		{"off-curve P-384 point", all, &ecdsa.PublicKey{Curve: elliptic.P384(), X: p256.X, Y: p256.Y}, "not a valid point on P-384"},
		{"P-256 coordinates out of range", all, &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).Add(p256.X, elliptic.P256().Params().P), Y: p256.Y}, "not a valid point"},
		{"P-256 point at infinity", all, &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int), Y: new(big.Int)}, "not a valid point"},
		{"ECDSA without a point", all, &ecdsa.PublicKey{Curve: elliptic.P256()}, "no point"},
		{"Ed25519 refused by default", pki.KeyPolicy{}, k["ed25519"].Public(), "Ed25519 keys are not allowed"},
		{"Ed25519 allowed", pki.KeyPolicy{AllowEd25519: true}, k["ed25519"].Public(), ""},
		{"Ed25519 short", pki.KeyPolicy{AllowEd25519: true}, ed25519.PublicKey(make([]byte, 31)), "Ed25519 public key is 31 bytes"},
		{"RSA refused by default", pki.KeyPolicy{}, rsa2048, "RSA keys are not allowed"},
		{"RSA 2048 allowed", pki.KeyPolicy{AllowRSA: true}, rsa2048, ""},
		{"RSA e=3", pki.KeyPolicy{AllowRSA: true}, &rsaE3Key().PublicKey, "RSA public exponent is 3, only 65537 is allowed"},
		{"RSA e=65539", pki.KeyPolicy{AllowRSA: true}, &rsa.PublicKey{N: rsa2048.N, E: 65539}, "RSA public exponent is 65539"},
		{"RSA e=1", pki.KeyPolicy{AllowRSA: true}, &rsa.PublicKey{N: rsa2048.N, E: 1}, "RSA public exponent is 1"},
		{"RSA 1024", pki.KeyPolicy{AllowRSA: true}, k["rsa1024"].Public(), "RSA key is 1024 bits, at least 2048 required"},
		{"RSA 2047", pki.KeyPolicy{AllowRSA: true}, oddModulus(t, 2047, 65537), "RSA key is 2047 bits, at least 2048 required"},
		{"RSA MinRSABits below the floor", pki.KeyPolicy{AllowRSA: true, MinRSABits: 1024}, k["rsa1024"].Public(), "at least 2048 required"},
		{"RSA under MinRSABits", pki.KeyPolicy{AllowRSA: true, MinRSABits: 3072}, rsa2048, "RSA key is 2048 bits, at least 3072 required"},
		{"RSA 8192", pki.KeyPolicy{AllowRSA: true}, oddModulus(t, 8192, 65537), ""},
		{"RSA 8200", pki.KeyPolicy{AllowRSA: true}, oddModulus(t, 8200, 65537), "RSA key is 8200 bits, at most 8192 allowed"},
		{"RSA 16384", all, oddModulus(t, 16384, 65537), "at most 8192 allowed"},
		{"RSA without modulus", all, &rsa.PublicKey{E: 65537}, "empty RSA public key"},
		{"nil", all, nil, "unsupported type"},
		{"typed nil ECDSA", all, (*ecdsa.PublicKey)(nil), "empty ECDSA public key"},
		{"typed nil RSA", all, (*rsa.PublicKey)(nil), "empty RSA public key"},
		{"ECDSA by value", all, *p256, "type ecdsa.PublicKey is not allowed"},
		{"X25519 (ECDH only)", all, mustECDH(t), "is not allowed"},
	}
	for _, tt := range tests {
		err := tt.policy.Check(tt.pub)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			}
			continue
		}
		if !errors.Is(err, pki.ErrBadCSR) || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: %v, want ErrBadCSR containing %q", tt.name, err, tt.wantErr)
		}
	}
	// CSRPolicy's key fields are a KeyPolicy.
	if got, want := (pki.CSRPolicy{AllowP384: true, AllowRSA: true, MinRSABits: 3072, MaxMACs: 2}).Keys(),
		(pki.KeyPolicy{AllowP384: true, AllowRSA: true, MinRSABits: 3072}); got != want {
		t.Errorf("CSRPolicy.Keys = %+v, want %+v", got, want)
	}
}

// mustECDH is an X25519 public key: a key type no policy allows.
func mustECDH(t *testing.T) crypto.PublicKey {
	t.Helper()
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

// TestOffCurveSPKI: a CSR whose SubjectPublicKeyInfo is a hand-built point
// off the curve never reaches the signature check.
func TestOffCurveSPKI(t *testing.T) {
	t.Parallel()
	spki := offCurveSPKI(t)
	if _, err := x509.ParsePKIXPublicKey(spki); err == nil {
		t.Fatal("crypto/x509 parsed an off-curve point")
	}
	key := keys()["p256"]
	real, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if len(real) != len(spki) {
		t.Fatalf("SPKI lengths %d and %d differ", len(real), len(spki))
	}
	der := createCSR(t, csrTemplate(t), key)
	if bytes.Count(der, real) != 1 {
		t.Fatal("SPKI not found in the CSR")
	}
	forged := bytes.Replace(der, real, spki, 1)
	csr, err := pki.ParseCSRPEM(pemCSR(forged))
	if err == nil {
		_, err = pki.CSRPolicy{AllowP384: true}.Check(csr)
	}
	if !errors.Is(err, pki.ErrBadCSR) {
		t.Fatalf("CSR with an off-curve key: %v, want ErrBadCSR", err)
	}
}

// TestIssuerKeyRule: whatever policy a caller applied, the Issuer signs no
// key outside KeyPolicy's rules.
func TestIssuerKeyRule(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	tca := pkitest.NewCA(t)
	id := pki.Identity{DeviceID: "d", Tenant: "t", Serial: "s"}
	for name, pub := range map[string]crypto.PublicKey{
		"RSA e=3":        &rsaE3Key().PublicKey,
		"RSA 8200":       oddModulus(t, 8200, 65537),
		"P-521":          keys()["p521"].Public(),
		"off-curve P256": &ecdsa.PublicKey{Curve: elliptic.P256(), X: big.NewInt(1), Y: big.NewInt(1)},
	} {
		if _, err := tca.Issuer.IssueDevice(ctx, &pki.DeviceRequest{Identity: id, PublicKey: pub}); !errors.Is(err, pki.ErrBadCSR) {
			t.Errorf("IssueDevice(%s) = %v, want ErrBadCSR", name, err)
		}
		if _, err := tca.Issuer.IssueServer(ctx, &pki.ServerRequest{PublicKey: pub, DNSNames: []string{"a.test"}, Lifetime: time.Hour}); !errors.Is(err, pki.ErrBadCSR) {
			t.Errorf("IssueServer(%s) = %v, want ErrBadCSR", name, err)
		}
		if _, err := tca.Issuer.IssueClient(ctx, &pki.ClientRequest{PublicKey: pub, CommonName: "c"}); !errors.Is(err, pki.ErrBadCSR) {
			t.Errorf("IssueClient(%s) = %v, want ErrBadCSR", name, err)
		}
	}
	for _, name := range []string{"p256", "p384", "ed25519", "rsa2048"} {
		if _, err := tca.Issuer.IssueDevice(ctx, &pki.DeviceRequest{Identity: id, PublicKey: keys()[name].Public()}); err != nil {
			t.Errorf("IssueDevice(%s): %v", name, err)
		}
	}
}
