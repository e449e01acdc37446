package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"io"
)

// SignDetached signs msg with signer (the CA's issuing key, whatever its
// KMS) and returns the signature algorithm that verifies it with the
// signer's certificate (x509.Certificate.CheckSignature) and the signature:
// ECDSA with SHA-256 or SHA-384 by curve, RSA PKCS #1 v1.5 with SHA-256,
// or Ed25519. It signs audit checkpoints.
func SignDetached(rand io.Reader, signer crypto.Signer, msg []byte) (x509.SignatureAlgorithm, []byte, error) {
	var alg x509.SignatureAlgorithm
	var h crypto.Hash
	switch pub := signer.Public().(type) {
	case *ecdsa.PublicKey:
		alg, h = x509.ECDSAWithSHA256, crypto.SHA256
		if pub.Curve == elliptic.P384() || pub.Curve == elliptic.P521() {
			alg, h = x509.ECDSAWithSHA384, crypto.SHA384
		}
	case *rsa.PublicKey:
		alg, h = x509.SHA256WithRSA, crypto.SHA256
	case ed25519.PublicKey:
		sig, err := signer.Sign(rand, msg, crypto.Hash(0))
		if err != nil {
			return 0, nil, fmt.Errorf("pki: sign: %w", err)
		}
		return x509.PureEd25519, sig, nil
	default:
		return 0, nil, fmt.Errorf("pki: sign: unsupported key type %T", pub)
	}
	d := h.New()
	d.Write(msg)
	sig, err := signer.Sign(rand, d.Sum(nil), h)
	if err != nil {
		return 0, nil, fmt.Errorf("pki: sign: %w", err)
	}
	return alg, sig, nil
}
