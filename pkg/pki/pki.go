// Package pki is devpki's X.509 layer: it creates and loads the CA (root and
// issuing intermediate, keys behind go.step.sm/crypto/kms URIs), issues
// device, server and client certificates through smallstep's cas/apiv1
// (softcas), encodes device identities into certificates and back, and checks
// enrollment CSRs.
package pki

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
)

var (
	// ErrExists is returned by CreateCA when any of the files it would write
	// already exists; nothing is written then.
	ErrExists = errors.New("CA file already exists")
	// ErrBadCSR is wrapped by every CSR rejection; the wrapping message says
	// precisely what is wrong.
	ErrBadCSR = errors.New("bad CSR")
	// ErrWrongPassword is returned by LoadCA when the CA key cannot be
	// decrypted with the given password.
	ErrWrongPassword = errors.New("wrong CA key password")
	// ErrBadIdentity is wrapped when an Identity or a certificate does not
	// follow the devpki identity format.
	ErrBadIdentity = errors.New("bad identity")
	// ErrBadSerial is wrapped when a hardware serial is refused (see
	// ValidateSerial); CSRPolicy.Check wraps it together with ErrBadCSR.
	ErrBadSerial = errors.New("bad serial")
	// ErrBadMAC is wrapped when a MAC address is refused (see NormalizeMAC);
	// CSRPolicy.Check wraps it together with ErrBadCSR.
	ErrBadMAC = errors.New("bad MAC address")
)

// Fingerprint returns the lowercase hex SHA-256 of the certificate's DER
// (what devices pin).
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}
