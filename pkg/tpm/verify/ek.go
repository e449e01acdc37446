package verify

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/smallstep/go-attestation/attest"
	x509ext "github.com/smallstep/go-attestation/x509"
)

var (
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidTPMManufacturer  = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidTPMModel         = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidTPMVersion       = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	oidEKCertificateEKU = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
)

// ParseEKCertificate parses an EK certificate as read from TPM NV memory,
// which may carry the TCG header and trailing padding that crypto/x509
// refuses.
func ParseEKCertificate(der []byte) (*x509.Certificate, error) {
	cert, err := attest.ParseEKCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse EK certificate: %w: %w", ErrEKUntrusted, err)
	}
	return cert, nil
}

// VerifyEKCertificate checks that ekCert is a TPM EK certificate that chains
// to roots (through intermediates, which may be nil) at time now.
//
// EK certificates carry a critical SAN made only of a directoryName with the
// TPM manufacturer, model and version attributes, which crypto/x509 reports as
// an unhandled critical extension. VerifyEKCertificate parses that SAN itself,
// requires the three attributes, and then verifies a copy of the certificate
// with only the SAN removed from UnhandledCriticalExtensions, so any other
// unhandled critical extension is still refused. It also requires the TCG EK
// certificate EKU (2.23.133.8.1).
func VerifyEKCertificate(ekCert *x509.Certificate, roots, intermediates *x509.CertPool, now time.Time) error {
	if ekCert == nil {
		return fmt.Errorf("verify EK certificate: %w: no certificate", ErrEKUntrusted)
	}
	if roots == nil {
		return fmt.Errorf("verify EK certificate: %w: no manufacturer roots configured", ErrEKUntrusted)
	}
	if err := checkTPMSAN(ekCert); err != nil {
		return fmt.Errorf("verify EK certificate %q: %w: %w", ekCert.Subject, ErrEKUntrusted, err)
	}
	if !slices.ContainsFunc(ekCert.UnknownExtKeyUsage, oidEKCertificateEKU.Equal) {
		return fmt.Errorf("verify EK certificate %q: %w: no EK certificate EKU 2.23.133.8.1", ekCert.Subject, ErrEKUntrusted)
	}
	cp := *ekCert
	cp.UnhandledCriticalExtensions = slices.DeleteFunc(slices.Clone(ekCert.UnhandledCriticalExtensions), oidSubjectAltName.Equal)
	if _, err := cp.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return fmt.Errorf("verify EK certificate %q: %w: %w", ekCert.Subject, ErrEKUntrusted, err)
	}
	return nil
}

// checkTPMSAN requires a SAN with a directoryName holding the TPM
// manufacturer, model and version attributes.
func checkTPMSAN(cert *x509.Certificate) error {
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		san, err := x509ext.ParseSubjectAltName(ext)
		if err != nil {
			return fmt.Errorf("parse SAN: %w", err)
		}
		for _, dn := range san.DirectoryNames {
			var manufacturer, model, version bool
			for _, atv := range dn.Names {
				switch {
				case atv.Type.Equal(oidTPMManufacturer):
					manufacturer = true
				case atv.Type.Equal(oidTPMModel):
					model = true
				case atv.Type.Equal(oidTPMVersion):
					version = true
				}
			}
			if manufacturer && model && version {
				return nil
			}
		}
		return fmt.Errorf("SAN lacks TPM manufacturer, model and version attributes")
	}
	return fmt.Errorf("no SAN with TPM manufacturer, model and version attributes")
}

// EKHash returns the hex SHA-256 of the PKIX DER encoding of an EK public key,
// the form operators pre-register in allow-lists.
func EKHash(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("hash EK public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}
