package pki

import (
	"crypto/sha256"
	"crypto/x509"
)

// ExpiredRenewalMessage is what a device signs (SignDetached) with the key
// of its expired certificate to renew it (POST /v1/renew/expired): the
// CA's nonce, bound to the certificate and to the CSR (DER; nil for a
// same-key renewal) so that neither can be swapped. The CA and the agent
// both build it here.
func ExpiredRenewalMessage(nonce []byte, cert *x509.Certificate, csrDER []byte) []byte {
	c, r := sha256.Sum256(cert.Raw), sha256.Sum256(csrDER)
	msg := append([]byte("devpki renew-expired v1\n"), nonce...)
	msg = append(msg, c[:]...)
	return append(msg, r[:]...)
}

// ExpiredRenewalQualifyingData is the TPM2_Certify qualifying data of a
// TPM-attested device's expired renewal: SHA-256 over the nonce and the
// certificate (32 bytes, within TPM2B_DATA). The CSR is not in it: a new
// TPM key is certified as it is created, before its CSR exists; the
// signature (ExpiredRenewalMessage) binds the CSR.
func ExpiredRenewalQualifyingData(nonce []byte, cert *x509.Certificate) []byte {
	h := sha256.New()
	h.Write([]byte("devpki renew-expired certify v1\n"))
	h.Write(nonce)
	c := sha256.Sum256(cert.Raw)
	h.Write(c[:])
	return h.Sum(nil)
}
