// Package wire holds the JSON request and response types of the devpki CA
// API and its RFC 9457 problem slugs. It is a leaf package: the server
// (package api) and the client (package api/client) both import it, and it
// imports nothing of devpki.
package wire

import (
	"fmt"
	"time"
)

// EnrollRequest is the body of POST /v1/enroll (and, later, /v1/renew).
type EnrollRequest struct {
	CSR string `json:"csr"` // PEM "CERTIFICATE REQUEST"
}

// EnrollResponse is the 201 reply to an enrollment or renewal.
type EnrollResponse struct {
	DeviceID    string    `json:"device_id"`
	Certificate string    `json:"certificate"` // PEM leaf
	Chain       []string  `json:"chain"`       // PEM intermediates, leaf's issuer first (root not included)
	RenewAfter  time.Time `json:"renew_after"` // RFC 3339
}

// TokenCreateRequest is the body of POST /v1/admin/tokens.
type TokenCreateRequest struct {
	Tenant string `json:"tenant,omitempty"` // default tenant when empty
	Serial string `json:"serial,omitempty"` // bind the token to one serial
	TTL    string `json:"ttl,omitempty"`    // Go duration, default "24h"
	Uses   int    `json:"uses,omitempty"`   // default 1
	// Reinstate, only with Serial, lets the token re-enroll that serial's
	// device after an admin revoked it (audited as a reinstatement).
	Reinstate bool `json:"reinstate,omitempty"`
}

// TokenCreateResponse is the 201 reply: the secret token, shown once.
type TokenCreateResponse struct {
	ID        string    `json:"id"`
	Token     string    `json:"token"`
	Tenant    string    `json:"tenant"`
	Serial    string    `json:"serial,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
	Uses      int       `json:"uses"`
	Reinstate bool      `json:"reinstate,omitempty"`
}

// ProblemTypePrefix starts every Problem.Type.
const ProblemTypePrefix = "urn:devpki:problem:"

// Problem is an RFC 9457 application/problem+json error body.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// RequestID is the server's id of the request (also its X-Request-Id
	// header and in the CA's access log).
	RequestID string `json:"request_id,omitempty"`
}

// Error makes a Problem usable as an error by clients.
func (p *Problem) Error() string {
	if p.Detail != "" {
		return fmt.Sprintf("%s (%d %s): %s", p.Title, p.Status, p.Type, p.Detail)
	}
	return fmt.Sprintf("%s (%d %s)", p.Title, p.Status, p.Type)
}

// Slug returns the part of Type after ProblemTypePrefix ("token-spent", ...).
func (p *Problem) Slug() string {
	if len(p.Type) > len(ProblemTypePrefix) && p.Type[:len(ProblemTypePrefix)] == ProblemTypePrefix {
		return p.Type[len(ProblemTypePrefix):]
	}
	return p.Type
}

// Device is a device as the admin API shows it.
type Device struct {
	ID            string     `json:"id"`
	Tenant        string     `json:"tenant"`
	Serial        string     `json:"serial"`
	MACs          []string   `json:"macs"`
	Status        string     `json:"status"`
	Method        string     `json:"method"`
	RekeyRequired bool       `json:"rekey_required,omitempty"`
	RekeyDeadline *time.Time `json:"rekey_deadline,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`

	// IDevIDIssuer and IDevIDSerial name the factory IDevID the device
	// enrolled with (issuer DN, certificate serial in hex); empty without.
	IDevIDIssuer string `json:"idevid_issuer,omitempty"`
	IDevIDSerial string `json:"idevid_serial,omitempty"`
}

// DeviceList is one page of devices; Next, when set, is the After of the
// next page. With status=quarantined the page holds the claims held for an
// admin (Quarantined) instead of devices, and Next is a claim id.
type DeviceList struct {
	Devices     []Device           `json:"devices"`
	Quarantined []QuarantinedClaim `json:"quarantined,omitempty"`
	Next        string             `json:"next,omitempty"`
}

// QuarantinedClaim is an enrollment claim the CA refused as a possible clone
// and holds for an admin: a TPM claiming a serial enrolled with another EK
// (reason "serial-has-other-ek"), or an enrolled EK claiming another serial
// ("ek-has-other-serial"). Nothing was issued to it. Repeats of the same
// claim (serial and EK) are counted in Attempts.
type QuarantinedClaim struct {
	ID     string   `json:"id"`
	Tenant string   `json:"tenant"`
	Serial string   `json:"serial"`
	MACs   []string `json:"macs"`
	EKHash string   `json:"ek_hash"`
	Reason string   `json:"reason"`
	// ConflictDeviceID is the enrolled device the claim collides with, and
	// ConflictEKHash that device's EK hash when the claim was last held
	// (empty for a device without a TPM).
	ConflictDeviceID string     `json:"conflict_device_id,omitempty"`
	ConflictEKHash   string     `json:"conflict_ek_hash,omitempty"`
	SourceAddr       string     `json:"source_addr,omitempty"`
	Attempts         int        `json:"attempts"`
	FirstSeen        time.Time  `json:"first_seen"`
	LastSeen         time.Time  `json:"last_seen"`
	Status           string     `json:"status"` // held, dismissed or released
	DismissedBy      string     `json:"dismissed_by,omitempty"`
	DismissedAt      *time.Time `json:"dismissed_at,omitempty"`
	ReleasedBy       string     `json:"released_by,omitempty"`
	ReleasedAt       *time.Time `json:"released_at,omitempty"`

	// IDevID is the claimant's factory IDevID and ConflictIDevID the
	// enrolled device's ("<certificate serial>@<issuer DN>"), for reason
	// serial-has-other-idevid.
	IDevID         string `json:"idevid,omitempty"`
	ConflictIDevID string `json:"conflict_idevid,omitempty"`
}

// ReleaseRequest is the body of POST /v1/admin/quarantine/{id}/release.
// Reason is the RFC 5280 reason (name or code) of the certificates the
// release revokes; empty means superseded.
type ReleaseRequest struct {
	Reason string `json:"reason,omitempty"`
}

// ReleaseResponse is the 200 reply to a release: the claim (now released),
// the enrolled device it collided with as it now is (re-bound to the
// claim's TPM, or revoked), the certificates of that device the release
// revoked, and the number of a CRL that lists them (0 when that rebuild
// failed; the CA retries on its schedule).
type ReleaseResponse struct {
	Claim        QuarantinedClaim     `json:"claim"`
	Device       Device               `json:"device"`
	Certificates []RevokedCertificate `json:"certificates"`
	CRLNumber    int64                `json:"crl_number"`
}

// Certificate is a certificate as the admin API shows it.
type Certificate struct {
	Serial           string     `json:"serial"`
	Kind             string     `json:"kind"`
	DeviceID         string     `json:"device_id,omitempty"`
	Subject          string     `json:"subject"`
	SANs             []string   `json:"sans"`
	NotBefore        time.Time  `json:"not_before"`
	NotAfter         time.Time  `json:"not_after"`
	Status           string     `json:"status"`
	RevokedAt        *time.Time `json:"revoked_at,omitempty"`
	RevocationReason int        `json:"revocation_reason,omitempty"`
	ReplacesSerial   string     `json:"replaces_serial,omitempty"`
	PEM              string     `json:"pem,omitempty"` // only when fetched one by one
}

// CertificateList is one page of certificates.
type CertificateList struct {
	Certificates []Certificate `json:"certificates"`
	Next         string        `json:"next,omitempty"`
}

// RotateRequest is the body of POST /v1/admin/devices/{id}/rotate: the
// device must re-key at its next renewal; after Deadline, if set, its
// certificates are revoked.
type RotateRequest struct {
	Deadline *time.Time `json:"deadline,omitempty"`
}

// IssueRequest is the body of POST /v1/admin/certificates: a certificate for
// another component from its CSR. Only the CSR's key is used.
type IssueRequest struct {
	CSR        string   `json:"csr"`
	Usage      string   `json:"usage"` // "server" or "client"
	CommonName string   `json:"common_name,omitempty"`
	DNSNames   []string `json:"dns_names,omitempty"`
	IPs        []string `json:"ips,omitempty"`
	Lifetime   string   `json:"lifetime,omitempty"` // Go duration, default 720h
}

// AuditEvent is one audit log entry.
type AuditEvent struct {
	Seq        int64     `json:"seq"`
	Time       time.Time `json:"time"`
	Tenant     string    `json:"tenant,omitempty"`
	Actor      string    `json:"actor"`
	Action     string    `json:"action"`
	Target     string    `json:"target,omitempty"`
	Result     string    `json:"result"`
	Detail     string    `json:"detail,omitempty"`
	SourceAddr string    `json:"source_addr,omitempty"`
	Hash       string    `json:"hash"`
}

// AuditList is one page of the audit log; Next is the After of the next page.
type AuditList struct {
	Events []AuditEvent `json:"events"`
	Next   int64        `json:"next,omitempty"`
}

// PreregisterRequest is the body of POST /v1/admin/preregistrations: a TPM
// EK public key bound to a device serial (and MACs) before the device first
// boots, for TPM enrollment without an EK certificate.
type PreregisterRequest struct {
	Serial string   `json:"serial"`
	MACs   []string `json:"macs,omitempty"`
	EKPub  string   `json:"ek_pub"` // PEM "PUBLIC KEY", or base64 of the PKIX DER
}

// Preregistration is the 201 reply.
type Preregistration struct {
	EKHash string   `json:"ek_hash"`
	Serial string   `json:"serial"`
	MACs   []string `json:"macs,omitempty"`
}

// TPMRoot is a TPM manufacturer CA certificate added through the admin API.
type TPMRoot struct {
	Fingerprint string `json:"fingerprint"`
	Subject     string `json:"subject"`
	// Kind is "root" (EK certificates chain to it) or "intermediate" (it
	// completes EK chains, adding no trust by itself).
	Kind      string    `json:"kind"`
	AddedBy   string    `json:"added_by,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// AddTPMRootRequest is the body of POST /v1/admin/tpm/roots.
type AddTPMRootRequest struct {
	PEM string `json:"pem"` // one CA certificate: self-signed is a root, any other an intermediate
}

// RenewRequest is the body of POST /v1/renew: empty to renew the same key,
// or a CSR naming the same identity to re-key.
type RenewRequest struct {
	CSR string `json:"csr,omitempty"` // PEM "CERTIFICATE REQUEST"
	// Certify is the TPM2_Certify of the CSR's key by the AK the device
	// enrolled with, its qualifying data (extraData) the SHA-256 of the DER
	// of the client certificate presented on this connection (the one being
	// renewed). Required to re-key a TPM-attested device (else 403
	// tpm-certify-required; an invalid one is 403 tpm-certify-invalid);
	// ignored for the same key and for devices not enrolled by TPM
	// attestation.
	Certify *TPMCertificationParameters `json:"certify,omitempty"`
}

// RevokeRequest is the body of POST /v1/admin/certificates/{serial}/revoke
// and POST /v1/admin/devices/{id}/revoke. Reason is an RFC 5280 reason name
// ("keyCompromise", "cessationOfOperation", ...) or its decimal code; empty
// means "unspecified". The server also accepts a JSON number.
type RevokeRequest struct {
	Reason string `json:"reason,omitempty"`
}

// RevokedCertificate is one certificate in a RevokeResponse.
type RevokedCertificate struct {
	Serial     string    `json:"serial"` // lowercase hex
	DeviceID   string    `json:"device_id,omitempty"`
	RevokedAt  time.Time `json:"revoked_at"`
	Reason     string    `json:"reason"` // RFC 5280 name
	ReasonCode int       `json:"reason_code"`
}

// RevokeResponse is the 200 reply to a revocation. A repeated revocation is
// not an error: AlreadyRevoked is true and nothing changed.
type RevokeResponse struct {
	Serial         string               `json:"serial,omitempty"`    // certificate revocations
	DeviceID       string               `json:"device_id,omitempty"` // device revocations
	AlreadyRevoked bool                 `json:"already_revoked"`
	Certificates   []RevokedCertificate `json:"certificates"` // revoked by this call (or, repeated, the certificate as it is)
	// CRLNumber is the number of a CRL published after the revocation that
	// lists it — the partition CRL the (first) certificate names in its CRL
	// distribution point, or the full /crl for a certificate that names it —
	// 0 when that rebuild failed (the CA retries on its schedule).
	CRLNumber int64 `json:"crl_number"`
}

// TPMAttestationParameters is the AK evidence: TPMT_PUBLIC, TPMS_CREATION_DATA,
// TPMS_ATTEST and TPMT_SIGNATURE, as go-attestation's
// attest.AttestationParameters. Base64 (standard) in JSON.
type TPMAttestationParameters struct {
	Public            []byte `json:"public"`
	CreateData        []byte `json:"create_data"`
	CreateAttestation []byte `json:"create_attestation"`
	CreateSignature   []byte `json:"create_signature"`
}

// TPMCertificationParameters is the TPM2_Certify of the application key by
// the AK, as go-attestation's attest.CertificationParameters.
type TPMCertificationParameters struct {
	Public            []byte `json:"public"`
	CreateData        []byte `json:"create_data,omitempty"`
	CreateAttestation []byte `json:"create_attestation"`
	CreateSignature   []byte `json:"create_signature"`
}

// TPMChallengeRequest is the body of POST /v1/enroll/tpm/challenge. Exactly
// one of EKCert (DER, as read from the TPM's NV memory) and EKPub (PKIX DER;
// must be pre-registered by an operator) is set.
type TPMChallengeRequest struct {
	EKCert []byte                   `json:"ek_cert,omitempty"`
	EKPub  []byte                   `json:"ek_pub,omitempty"`
	AK     TPMAttestationParameters `json:"ak"`
	Serial string                   `json:"serial"`
	MACs   []string                 `json:"macs,omitempty"`
}

// TPMChallengeResponse is the 200 reply: the encrypted credential for
// TPM2_ActivateCredential (credential blob and encrypted secret), and the
// nonce to certify the application key with.
type TPMChallengeResponse struct {
	ChallengeID string    `json:"challenge_id"`
	Credential  []byte    `json:"credential"`
	Secret      []byte    `json:"secret"`
	Nonce       []byte    `json:"nonce"`
	Expires     time.Time `json:"expires"`
}

// TPMEnrollRequest is the body of POST /v1/enroll/tpm; the 201 reply is an
// EnrollResponse.
type TPMEnrollRequest struct {
	ChallengeID     string                     `json:"challenge_id"`
	ActivatedSecret []byte                     `json:"activated_secret"`
	Certify         TPMCertificationParameters `json:"certify"`
	CSR             string                     `json:"csr"` // PEM; its key is the certified key
}

// Refusal is an aggregate of anonymous refusals: one source, one door
// (action), one reason class, one tenant, one minute (window).
type Refusal struct {
	ID         int64     `json:"id"`
	Window     time.Time `json:"window"`
	SourceAddr string    `json:"source_addr"`
	Action     string    `json:"action"`
	Reason     string    `json:"reason"`
	Tenant     string    `json:"tenant,omitempty"`
	Count      int64     `json:"count"`
	First      time.Time `json:"first"`
	Last       time.Time `json:"last"`
	Sample     string    `json:"sample,omitempty"`
}

// RefusalList is one page of the refusal log; Next is the After of the next
// page.
type RefusalList struct {
	Refusals []Refusal `json:"refusals"`
	Next     int64     `json:"next,omitempty"`
}

// AddIDevIDRootRequest is the body of POST /v1/admin/idevid/roots: a
// device manufacturer's CA certificates (roots and intermediates, one or
// more PEM CERTIFICATE blocks) to trust for factory IDevID enrollment in
// Tenant (a name; empty means the admin's own tenant).
type AddIDevIDRootRequest struct {
	PEM    string `json:"pem"`
	Tenant string `json:"tenant,omitempty"`
}

// IDevIDRoot is a manufacturer CA certificate trusted for IDevID
// enrollment in a tenant: the POST reply lists one per certificate sent
// (Added false: the tenant trusted it already, nothing was written), the
// GET reply the tenant's.
type IDevIDRoot struct {
	ID          string    `json:"id"`
	Tenant      string    `json:"tenant"`
	Fingerprint string    `json:"fingerprint"` // hex SHA-256 of the DER
	Subject     string    `json:"subject"`
	Kind        string    `json:"kind"` // "root" (a trust anchor) or "intermediate"
	AddedBy     string    `json:"added_by,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	Added       bool      `json:"added,omitempty"`
	PEM         string    `json:"pem,omitempty"`
}

// AdminCreateRequest is the body of POST /v1/admin/admins: a new admin and
// the CSR of its first certificate. An empty Tenant makes a super-admin
// (all tenants; only a super-admin may make one).
type AdminCreateRequest struct {
	Name   string `json:"name"`
	Role   string `json:"role"` // admin, operator or auditor
	Tenant string `json:"tenant,omitempty"`
	CSR    string `json:"csr"` // PEM PKCS #10; only its key is used
}

// Admin is an admin as the admin API shows it. Tenant is empty for a
// super-admin.
type Admin struct {
	Name      string     `json:"name"`
	Role      string     `json:"role"`
	Tenant    string     `json:"tenant,omitempty"`
	Super     bool       `json:"super"`
	Status    string     `json:"status"` // active or revoked
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
}

// AdminCertificate is the 201 reply to POST /v1/admin/admins and to POST
// /v1/admin/renew: the admin and its new certificate (PEM) with the
// issuing chain.
type AdminCertificate struct {
	Admin       Admin    `json:"admin"`
	Certificate string   `json:"certificate"`
	Chain       []string `json:"chain"`
}

// AdminList is the reply to GET /v1/admin/admins.
type AdminList struct {
	Admins []Admin `json:"admins"`
}

// AdminRevokeResponse is the 200 reply to POST
// /v1/admin/admins/{name}/revoke: the admin (now revoked) and the
// certificates this call revoked.
type AdminRevokeResponse struct {
	Admin   Admin                `json:"admin"`
	Revoked []RevokedCertificate `json:"revoked"`
}

// AdminRenewRequest is the body of POST /v1/admin/renew: the CSR of the
// key the new certificate certifies (the current key or a new one).
type AdminRenewRequest struct {
	CSR string `json:"csr"`
}

// Tenant is a tenant and its enrollment policy. Empty Methods or KeyTypes
// admit whatever the CA admits; an empty CertLifetime means the CA's.
type Tenant struct {
	Name         string    `json:"name"`
	RequireTPM   bool      `json:"require_tpm"`
	Methods      []string  `json:"methods,omitempty"`
	KeyTypes     []string  `json:"key_types,omitempty"`
	CertLifetime string    `json:"cert_lifetime,omitempty"` // Go duration, e.g. 2h
	CreatedAt    time.Time `json:"created_at"`

	// RenewGrace is the tenant's renewal grace period for expired
	// certificates: a Go duration, "off", or absent for the CA's.
	RenewGrace string `json:"renew_grace,omitempty"`
}

// TenantList is the reply to GET /v1/admin/tenants.
type TenantList struct {
	Tenants []Tenant `json:"tenants"`
}

// TenantCreateRequest is the body of POST /v1/admin/tenants.
type TenantCreateRequest struct {
	Name         string   `json:"name"`
	RequireTPM   bool     `json:"require_tpm,omitempty"`
	Methods      []string `json:"methods,omitempty"`
	KeyTypes     []string `json:"key_types,omitempty"`
	CertLifetime string   `json:"cert_lifetime,omitempty"`
	RenewGrace   string   `json:"renew_grace,omitempty"` // Go duration or "off"; empty: the CA's
}

// TenantPolicyRequest is the body of POST /v1/admin/tenants/{name}: the
// policy fields to change (absent fields stay; an empty list admits
// everything again; cert_lifetime "0" means the CA's).
type TenantPolicyRequest struct {
	RequireTPM   *bool     `json:"require_tpm,omitempty"`
	Methods      *[]string `json:"methods,omitempty"`
	KeyTypes     *[]string `json:"key_types,omitempty"`
	CertLifetime *string   `json:"cert_lifetime,omitempty"`
	// RenewGrace: a Go duration, "off", or "0" for the CA's.
	RenewGrace *string `json:"renew_grace,omitempty"`
}
