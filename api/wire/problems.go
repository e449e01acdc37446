package wire

// Problem type slugs: every RFC 9457 answer of the CA has Type
// ProblemTypePrefix + one of these. The status each is sent with is in the
// comment; api/errors.go is the one place that chooses it.
const (
	// Requests the CA could not read.
	SlugBadRequest      = "bad-request"       // 400 (415 for a wrong Content-Type): malformed JSON, unknown fields, out-of-range arguments
	SlugBadCSR          = "bad-csr"           // 400: the CSR is malformed, badly signed, or asks for what policy refuses
	SlugBadSerial       = "bad-serial"        // 400: the serial is not 1-64 characters of A-Z a-z 0-9 . _ - (or is "." or "..")
	SlugBadMAC          = "bad-mac"           // 400: a MAC address is malformed, all-zero or broadcast
	SlugBadReason       = "bad-reason"        // 400: not an RFC 5280 revocation reason
	SlugPayloadTooLarge = "payload-too-large" // 413: the body is over the CA's limit

	// Authentication and authorization.
	SlugUnauthorized  = "unauthorized"   // 401: a client certificate is required
	SlugForbidden     = "forbidden"      // 403: the caller's role or tenant does not allow it
	SlugTokenInvalid  = "token-invalid"  // 401: no bootstrap token, or an unknown one
	SlugTokenExpired  = "token-expired"  // 401: the bootstrap token expired
	SlugTokenSpent    = "token-spent"    // 401: the bootstrap token has no uses left
	SlugTokenMismatch = "token-mismatch" // 403: the token is bound to another serial or tenant

	// Enrollment and renewal decisions.
	SlugSerialConflict = "serial-conflict" // 409: the serial is enrolled with another identity; nothing was spent or signed
	SlugDeviceRevoked  = "device-revoked"  // 409: an admin revoked this device; it comes back only by 'ca devices reinstate' or a reinstate token
	SlugRevoked        = "revoked"         // 403: the device is revoked or held; renewal refused
	SlugNotRenewable   = "not-renewable"   // 403: the presented certificate is revoked, superseded or not a device's
	SlugRekeyRequired  = "rekey-required"  // 409: an admin forced a re-key: renew again with a new key's CSR

	// TPM attestation.
	SlugTPMUntrustedEK     = "tpm-untrusted-ek"      // 403: EK certificate not from a configured manufacturer, or a bare EK key not pre-registered
	SlugTPMInvalidAK       = "tpm-invalid-ak"        // 400: AK evidence malformed or not a TPM-made restricted signing key
	SlugTPMActivation      = "tpm-activation-failed" // 403: the activated secret is wrong
	SlugTPMCertifyInvalid  = "tpm-certify-invalid"   // 403: certification of the key, its nonce, or CSR key ≠ certified key
	SlugTPMCertifyRequired = "tpm-certify-required"  // 403: a TPM-attested device re-keys without a certification of the new key by its AK
	SlugChallengeExpired   = "challenge-expired"     // 410: unknown or expired challenge: start again
	SlugChallengeUsed      = "challenge-used"        // 409: the challenge was already answered
	SlugCloneSuspect       = "clone-suspect"         // 403: serial, MAC or EK already enrolled with another identity; held for an admin
	SlugTPMDisabled        = "tpm-disabled"          // 404: the CA has no TPM attestation configured
	SlugTPMRequired        = "tpm-required"          // 403: the tenant admits only TPM-attested devices; enroll with a TPM
	SlugTenantPolicy       = "tenant-policy"         // 403: the tenant's policy does not admit this enrollment method or key type

	// Renewal of an expired certificate (POST /v1/renew/expired).
	SlugRenewGraceExpired = "renew-grace-expired" // 403: expired longer ago than the renewal grace period (or renewal of expired certificates is off): re-enroll with a token bound to the serial
	SlugRenewProofInvalid = "renew-proof-invalid" // 403: the signature over the challenge is not the expired certificate's key's, or the challenge was for another certificate

	// Factory IDevID (IEEE 802.1AR) enrollment.
	SlugIDevIDRequired            = "idevid-required"             // 401: no IDevID client certificate (and no bootstrap token)
	SlugIDevIDUnknownManufacturer = "idevid-unknown-manufacturer" // 403: the IDevID chains to no manufacturer CA registered ('ca idevid roots add')
	SlugIDevIDInvalid             = "idevid-invalid"              // 403: expired or not yet valid, wrong key usage, no serial, a devpki certificate, ...
	SlugIDevIDSerialMismatch      = "idevid-serial-mismatch"      // 403: the CSR's serialNumber is not the IDevID's serial

	// Resources and state.
	SlugNotFound         = "not-found"          // 404
	SlugMethodNotAllowed = "method-not-allowed" // 405
	SlugConflict         = "conflict"           // 409: already exists, not in a state that allows it, or a concurrent change
	SlugRolloverOrder    = "rollover-order"     // 409: a CA rollover step out of order (activate before prepare, retire before activate, prepare twice); nothing changed
	SlugNotImplemented   = "not-implemented"    // 501: this CA is not configured for it

	// The CA itself.
	SlugStoreUnavailable = "store-unavailable" // 503 + Retry-After: the registry cannot commit; nothing was signed or spent; retry
	SlugUnavailable      = "unavailable"       // 503/429 + Retry-After: busy; retry later
	SlugOverloaded       = "overloaded"        // 503 + Retry-After: the enrollment and renewal doors are full (api.Limits.MaxInFlight); nothing was done; retry
	SlugRateLimited      = "rate-limited"      // 429 + Retry-After: too many requests from this address or tenant, or locked out after failed authentications
	SlugInternal         = "internal"          // 500: a fault of the CA, logged with its cause
)
