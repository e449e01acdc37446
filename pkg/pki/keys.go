package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
)

// RSA key sizes KeyPolicy accepts (when it accepts RSA at all).
const (
	MinRSABits = 2048
	MaxRSABits = 8192
)

// rsaExponent is the only RSA public exponent accepted (F4).
const rsaExponent = 65537

// KeyPolicy says which public keys may be certified. It is the one key rule
// of devpki: CSRPolicy (device enrollment), component issuance and the
// Issuer all apply it. The zero value accepts ECDSA P-256 only.
//
// RSA keys must have a modulus of MinRSABits (or the policy's MinRSABits
// when higher) to MaxRSABits bits and the public exponent 65537; ECDSA points must lie on
// their curve; P-521, DSA and every other key type are refused.
type KeyPolicy struct {
	AllowP384    bool // also accept ECDSA P-384
	AllowEd25519 bool // also accept Ed25519
	AllowRSA     bool // also accept RSA keys
	MinRSABits   int  // minimum RSA modulus size in bits; default and floor MinRSABits (2048)
}

// issuerKeys is every key some policy may allow: the Issuer's last check,
// whatever the caller's policy was.
var issuerKeys = KeyPolicy{AllowP384: true, AllowEd25519: true, AllowRSA: true}

// Check returns nil when pub is a key the policy allows, and otherwise an
// error wrapping ErrBadCSR that says what is wrong with it.
func (p KeyPolicy) Check(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return badCSR("empty ECDSA public key")
		}
		switch k.Curve {
		case elliptic.P256():
		case elliptic.P384():
			if !p.AllowP384 {
				return badCSR("ECDSA P-384 keys are not allowed by policy (only P-256)")
			}
		default:
			return badCSR("ECDSA curve %s is not allowed (only P-256 and, where policy allows, P-384)", k.Curve.Params().Name)
		}
		// ECDH refuses the point at infinity and points off the curve, but
		// panics on missing coordinates.
		//lint:ignore SA1019 only checked for nil, never used as numbers
		if k.X == nil || k.Y == nil {
			return badCSR("ECDSA public key has no point")
		}
		if _, err := k.ECDH(); err != nil {
			return badCSR("ECDSA public key is not a valid point on %s", k.Curve.Params().Name)
		}
		return nil
	case ed25519.PublicKey:
		if !p.AllowEd25519 {
			return badCSR("Ed25519 keys are not allowed by policy")
		}
		if len(k) != ed25519.PublicKeySize {
			return badCSR("Ed25519 public key is %d bytes, want %d", len(k), ed25519.PublicKeySize)
		}
		return nil
	case *rsa.PublicKey:
		if !p.AllowRSA {
			return badCSR("RSA keys are not allowed by policy")
		}
		if k == nil || k.N == nil || k.N.Sign() <= 0 {
			return badCSR("empty RSA public key")
		}
		minBits := max(MinRSABits, p.MinRSABits)
		bits := k.N.BitLen()
		switch {
		case bits < minBits:
			return badCSR("RSA key is %d bits, at least %d required", bits, minBits)
		case bits > MaxRSABits:
			return badCSR("RSA key is %d bits, at most %d allowed", bits, MaxRSABits)
		case k.E != rsaExponent:
			return badCSR("RSA public exponent is %d, only %d is allowed", k.E, rsaExponent)
		}
		return nil
	case nil:
		return badCSR("no public key, or one of an unsupported type")
	default:
		return badCSR("public key type %T is not allowed (DSA and others are refused)", pub)
	}
}
