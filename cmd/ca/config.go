package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"devpki/api"
	"devpki/pkg/atomicfile"
	"devpki/pkg/pki"
	"devpki/pkg/provision"
)

// Config is DIR/ca.yaml. Relative paths are relative to the file's directory.
type Config struct {
	// Listen is the HTTPS address, e.g. "127.0.0.1:8443".
	Listen string `yaml:"listen"`
	// URL is how devices and admins reach this CA; the CLI's default --ca.
	URL string `yaml:"url"`
	// ExternalURL is the base URL relying parties fetch the CRL (ExternalURL
	// + "/crl") and ask OCSP (ExternalURL + "/ocsp") from; issued device and
	// client certificates carry both. Empty means URL. HTTPURL, when set,
	// takes its place.
	ExternalURL string `yaml:"external_url,omitempty"`
	// HTTPListen is the address of the plain-HTTP publication listener,
	// e.g. "0.0.0.0:80": it serves only GET /crl, OCSP (POST /ocsp, GET
	// /ocsp/<base64>) and the CA certificates (/v1/ca/roots, /v1/ca/chain,
	// DER /ca.crt), so that relying parties need not trust the CA's TLS to
	// learn whether a certificate (the CA's TLS one included) is revoked.
	// Empty means no plain listener; 'ca serve --http-listen' sets it and
	// 'ca serve --dev' turns it on (127.0.0.1:8080, or a free port).
	HTTPListen string `yaml:"http_listen,omitempty"`
	// HTTPURL is the base URL issued device and client certificates name
	// when set: CRL distribution point HTTPURL + "/crl", AIA OCSP HTTPURL +
	// "/ocsp" and AIA caIssuers HTTPURL + "/ca.crt" (the issuing CA, DER).
	// Empty with HTTPListen set means "http://" + the address the listener
	// bound (so HTTPListen must then name a host, not all interfaces);
	// empty without HTTPListen means ExternalURL's /crl and /ocsp and no
	// caIssuers.
	HTTPURL string `yaml:"http_url,omitempty"`
	// MetricsListen, when set, is a plain-HTTP address serving only GET
	// /metrics (Prometheus text) to anyone who reaches it — bind it to
	// loopback or a monitoring network; e.g. "127.0.0.1:9464". The HTTPS
	// listener serves /metrics to admin certificates either way. 'ca serve
	// --metrics-listen' sets it.
	MetricsListen string `yaml:"metrics_listen,omitempty"`
	// TrustDomain names identities: spiffe://<trust_domain>/<tenant>/device/<serial>.
	TrustDomain string `yaml:"trust_domain"`
	// PasswordFile holds the passphrase of the CA, TLS and admin keys. When
	// empty the passphrase comes from $DEVPKI_PASSWORD.
	PasswordFile string `yaml:"password_file,omitempty"`
	// LogFormat is the format of ca serve's log on stderr, the access log
	// (one line per request) included: "text" (default, logfmt-like) or
	// "json" (one JSON object per line). --log-format overrides it.
	LogFormat string `yaml:"log_format,omitempty"`
	// MemoryLimit is 'ca serve''s soft memory limit (the Go runtime's,
	// see memlimit.go): a size such as 128MiB (the default), or "off".
	MemoryLimit string `yaml:"memory_limit,omitempty"`

	CA         CAConfig         `yaml:"ca"`
	TLS        TLSConfig        `yaml:"tls"`
	Admin      AdminKeyConfig   `yaml:"admin"`
	DB         DBConfig         `yaml:"db"`
	Enrollment EnrollmentConfig `yaml:"enrollment"`
	CRL        CRLConfig        `yaml:"crl,omitempty"`
	OCSP       OCSPConfig       `yaml:"ocsp,omitempty"`
	TPM        TPMConfig        `yaml:"tpm,omitempty"`
	Limits     LimitsConfig     `yaml:"limits,omitempty"`
	Metrics    MetricsConfig    `yaml:"metrics,omitempty"`
	Renew      RenewConfig      `yaml:"renew,omitempty"`

	dir string // directory of the config file
}

// CAConfig locates the CA certificates and the issuing key.
type CAConfig struct {
	Root         string `yaml:"root"`
	Intermediate string `yaml:"intermediate"`
	// Key is a go.step.sm/crypto/kms URI of the issuing key, e.g.
	// "softkms:path=intermediate.key" (relative paths allowed) or a key in
	// a PKCS#11 token, "pkcs11:module-path=…;token=…;id=…;object=…?pin-source=FILE".
	Key string `yaml:"key"`
	// RootKey is the root's key: its encrypted file (same passphrase as
	// the CA's), by default root.key beside ca.yaml, or the pkcs11: URI
	// when 'ca init --kms-root' made it in the token. 'ca serve' never uses
	// it; 'ca rollover prepare' signs the next issuer with it.
	RootKey string `yaml:"root_key,omitempty"`
}

// TLSConfig is the CA's own HTTPS listener.
type TLSConfig struct {
	KeyPair `yaml:",inline"`
	// ClassicalKeyExchange turns off the hybrid post-quantum key exchange
	// (X25519MLKEM768, Go's default) and offers X25519 and P-256 only. The
	// hybrid costs about 0.1 ms of server CPU per handshake on a small
	// machine (docs/BENCHMARKS.md); what crosses this listener — CSRs,
	// certificates, single-use bootstrap tokens — has no long-term secrecy
	// value, so a CA that must enroll fleets fast may trade it away.
	ClassicalKeyExchange bool `yaml:"classical_key_exchange,omitempty"`
}

// AdminKeyConfig is the admin certificate the CLI acts with by default
// (cert, key) and the lifetime of the admin certificates the CA issues
// ('ca admins add', 'ca admins renew').
type AdminKeyConfig struct {
	KeyPair `yaml:",inline"`
	// CertLifetime is the lifetime of admin certificates issued through the
	// admin API; default 2160h (90 days), at least 1h, at most 8760h.
	CertLifetime Duration `yaml:"cert_lifetime,omitempty"`
}

// KeyPair is a PEM certificate chain and its encrypted PEM key.
type KeyPair struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// DBConfig selects the registry store.
type DBConfig struct {
	Driver string `yaml:"driver"` // "sqlite" (default) or "postgres"
	DSN    string `yaml:"dsn"`    // sqlite: file path; postgres: connection string
	// Migrate says what opening the registry does when its schema is
	// behind this binary's: "auto" (default) applies the pending
	// migrations, under a lock on PostgreSQL; "manual" refuses to start
	// until an operator runs 'ca db migrate'.
	Migrate string `yaml:"migrate,omitempty"`
	// Prefetch says whether 'ca serve' has the kernel read a SQLite
	// registry into the page cache as it starts: "auto" (default) when the
	// file takes at most half of the available memory, "off" never.
	// PostgreSQL ignores it (its own buffers: pg_prewarm).
	Prefetch string `yaml:"prefetch,omitempty"`
}

// EnrollmentConfig is the enrollment policy.
type EnrollmentConfig struct {
	CertLifetime Duration `yaml:"cert_lifetime"` // default pki.DefaultLeafLifetime (720h)
	AllowP384    bool     `yaml:"allow_p384"`
	AllowEd25519 bool     `yaml:"allow_ed25519"`
	AllowRSA     bool     `yaml:"allow_rsa"` // RSA 2048 to 8192 bits, exponent 65537
	// Profile of device certificates: "default" (the SPIFFE ID and one
	// urn:dev:mac URI per MAC) or "spiffe" (the SPIFFE ID only: one URI SAN,
	// X.509-SVID compatible). Empty means "default".
	Profile string `yaml:"profile,omitempty"`
}

// Enrollment profile names in ca.yaml.
const (
	profileDefault = "default"
	profileSPIFFE  = "spiffe"
)

// CertProfile returns the pki profile (pki.ProfileDefault or
// pki.ProfileSPIFFE) that Profile names; Validate has refused any other.
func (e EnrollmentConfig) CertProfile() string {
	if e.Profile == profileSPIFFE {
		return pki.ProfileSPIFFE
	}
	return pki.ProfileDefault
}

// LimitsConfig guards the doors a stranger can knock on (enrollment by
// token, IDevID or EST, the TPM challenge and answer, renewal). Every
// counter is kept by each replica in its memory: with N replicas behind a
// balancer, a source or tenant gets up to N times these rates (and N times
// the failures before all have locked it out). A key left out takes its
// default; 0 disables that limit.
type LimitsConfig struct {
	// PerSourceRate is requests per second per source address (IPv6: per
	// /64) and door; default 50, with bursts of PerSourceBurst (default
	// 100) — generous, as a factory line enrolls through one NAT address.
	PerSourceRate  *float64 `yaml:"per_source_rate,omitempty"`
	PerSourceBurst *int     `yaml:"per_source_burst,omitempty"`
	// LockoutFailures failed authentications (401, a refused token or
	// certificate, 409 serial-conflict) from one source on one door within
	// LockoutWindow lock that source out of the door for LockoutWindow
	// (429 with Retry-After); defaults 10 and 1m.
	LockoutFailures *int      `yaml:"lockout_failures,omitempty"`
	LockoutWindow   *Duration `yaml:"lockout_window,omitempty"`
	// PerTenantRate is admitted enrollments, TPM challenges and renewals
	// per second per tenant; default 200, with bursts of PerTenantBurst
	// (default 400): one tenant's fleet storm cannot take the CA's whole
	// signing capacity.
	PerTenantRate  *float64 `yaml:"per_tenant_rate,omitempty"`
	PerTenantBurst *int     `yaml:"per_tenant_burst,omitempty"`
	// MaxInFlight is the enrollment and renewal requests (every door
	// together) this replica works on at once; default 32. MaxQueued more
	// (default 128) wait up to QueueWait (default 250ms) for a slot; the
	// rest are shed at once with 503 overloaded and Retry-After, so a
	// fleet storm meets a bounded queue and the admin API keeps its
	// latency. 0 disables the bound.
	MaxInFlight *int      `yaml:"max_in_flight,omitempty"`
	MaxQueued   *int      `yaml:"max_queued,omitempty"`
	QueueWait   *Duration `yaml:"queue_wait,omitempty"`
	// MaxHandshakes is the TLS handshakes this replica runs at once
	// (default 16); more new connections wait, parked, for their turn, so
	// a storm of them does not delay requests on open connections. 0
	// disables the bound.
	MaxHandshakes *int `yaml:"max_handshakes,omitempty"`
}

// Door is the API's limits, defaults applied.
func (l LimitsConfig) Door() api.Limits {
	d := api.DefaultLimits
	return api.Limits{
		PerSourceRate: orDefault(l.PerSourceRate, d.PerSourceRate), PerSourceBurst: orDefault(l.PerSourceBurst, d.PerSourceBurst),
		LockoutFailures: orDefault(l.LockoutFailures, d.LockoutFailures),
		LockoutWindow:   time.Duration(orDefault(l.LockoutWindow, Duration(d.LockoutWindow))),
		MaxInFlight:     orDefault(l.MaxInFlight, d.MaxInFlight), MaxQueued: orDefault(l.MaxQueued, d.MaxQueued),
		QueueWait: time.Duration(orDefault(l.QueueWait, Duration(d.QueueWait))), MaxHandshakes: orDefault(l.MaxHandshakes, d.MaxHandshakes),
	}
}

// Defaults of the per-tenant limit.
const (
	defaultPerTenantRate  = 200
	defaultPerTenantBurst = 400
)

// Tenant is the per-tenant limiter (nil when disabled).
func (l LimitsConfig) Tenant() *provision.TenantLimiter {
	return provision.NewTenantLimiter(orDefault(l.PerTenantRate, defaultPerTenantRate), orDefault(l.PerTenantBurst, defaultPerTenantBurst))
}

func orDefault[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// CRLConfig is the CRL served at /crl.
type CRLConfig struct {
	// Validity is nextUpdate - thisUpdate; default 24h. The CRL is rebuilt on
	// every revocation and at half of it at the latest.
	Validity Duration `yaml:"validity,omitempty"`
	// Refresh is how often each replica re-reads revocations (made by other
	// replicas) and the longest HTTP caches and the OCSP cache keep an
	// answer; default 1m. It bounds how late a revocation shows everywhere.
	Refresh Duration `yaml:"refresh,omitempty"`
	// Partitions is how many partition CRLs (RFC 5280 issuing distribution
	// points, served at /crl/p/1 ... /crl/p/N) new device and client
	// certificates are spread over, each naming its own in its CRL
	// distribution point, so that a revocation re-signs one small CRL;
	// default 256, at most 4096; -1 makes new certificates name the full
	// CRL. The full CRL at /crl lists every revocation whatever this is.
	// Lowering it keeps serving the partitions certificates already name.
	Partitions int `yaml:"partitions,omitempty"`
}

// OCSPConfig is the OCSP responder at /ocsp.
type OCSPConfig struct {
	// Validity is nextUpdate - thisUpdate of responses; default 1h.
	Validity Duration `yaml:"validity,omitempty"`
	// ResponderLifetime is the lifetime of the delegated responder
	// certificate, re-issued at half of it; default 168h.
	ResponderLifetime Duration `yaml:"responder_lifetime,omitempty"`
}

// TPMConfig enables TPM attestation enrollment (POST /v1/enroll/tpm/...).
// With no EKRoots and Enabled false the routes answer 404 tpm-disabled.
type TPMConfig struct {
	// Enabled turns TPM enrollment on even without EKRoots, for TPMs whose
	// EK public key an operator pre-registered. Set EKRoots implies it.
	Enabled bool `yaml:"enabled,omitempty"`
	// EKRoots are PEM files of TPM manufacturer root certificates (relative
	// to ca.yaml); EK certificates must chain to one of them.
	EKRoots []string `yaml:"ek_roots,omitempty"`
	// EKIntermediates are PEM files of manufacturer issuing CAs, used to
	// build chains whose intermediates the device does not send. 'ca tpm
	// roots add' adds more (and roots) to the registry at runtime.
	EKIntermediates []string `yaml:"ek_intermediates,omitempty"`
	// Tenant is the tenant TPM-attested devices join; default "default".
	Tenant string `yaml:"tenant,omitempty"`
	// ChallengeTTL is how long a credential-activation challenge is
	// accepted; default 60s.
	ChallengeTTL Duration `yaml:"challenge_ttl,omitempty"`
}

// Duration is a time.Duration written as "720h" in YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration such as 720h", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// LoadConfig reads path strictly (unknown keys are errors), applies defaults
// and validates.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w (create one with 'ca init --dir DIR')", err)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("parse config %s: %w", path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	c.dir = filepath.Dir(abs)
	c.defaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config %s:\n%w", path, err)
	}
	return &c, nil
}

func (c *Config) defaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8443"
	}
	if c.URL == "" {
		c.URL = "https://" + c.Listen
	}
	if c.TrustDomain == "" {
		c.TrustDomain = "devpki.local"
	}
	if c.DB.Driver == "" {
		c.DB.Driver = "sqlite"
	}
	if c.Enrollment.CertLifetime == 0 {
		c.Enrollment.CertLifetime = Duration(pki.DefaultLeafLifetime)
	}
	if c.Admin.CertLifetime == 0 {
		c.Admin.CertLifetime = Duration(provision.DefaultAdminCertLifetime)
	}
	if c.Enrollment.Profile == "" {
		c.Enrollment.Profile = profileDefault
	}
	if c.ExternalURL == "" {
		c.ExternalURL = c.URL
	}
	c.ExternalURL = strings.TrimRight(c.ExternalURL, "/")
	c.HTTPURL = strings.TrimRight(c.HTTPURL, "/")
	if c.CRL.Validity == 0 {
		c.CRL.Validity = Duration(24 * time.Hour)
	}
	if c.CRL.Refresh == 0 {
		c.CRL.Refresh = Duration(time.Minute)
	}
	if c.CRL.Partitions == 0 {
		c.CRL.Partitions = pki.DefaultCRLPartitions
	}
	if c.OCSP.Validity == 0 {
		c.OCSP.Validity = Duration(time.Hour)
	}
	if c.OCSP.ResponderLifetime == 0 {
		c.OCSP.ResponderLifetime = Duration(168 * time.Hour)
	}
}

// Validate reports every problem at once and changes nothing.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen: %q is not host:port", c.Listen))
	}
	if u, err := url.Parse(c.URL); err != nil || u.Scheme != "https" || u.Host == "" {
		errs = append(errs, fmt.Errorf("url: %q is not an https:// URL", c.URL))
	}
	for name, v := range map[string]*float64{"limits.per_source_rate": c.Limits.PerSourceRate, "limits.per_tenant_rate": c.Limits.PerTenantRate} {
		if v != nil && *v < 0 {
			errs = append(errs, fmt.Errorf("%s: %v is negative (0 disables the limit)", name, *v))
		}
	}
	for name, v := range map[string]*int{"limits.per_source_burst": c.Limits.PerSourceBurst, "limits.per_tenant_burst": c.Limits.PerTenantBurst,
		"limits.lockout_failures": c.Limits.LockoutFailures, "limits.max_in_flight": c.Limits.MaxInFlight, "limits.max_queued": c.Limits.MaxQueued,
		"limits.max_handshakes": c.Limits.MaxHandshakes} {
		if v != nil && *v < 0 {
			errs = append(errs, fmt.Errorf("%s: %d is negative", name, *v))
		}
	}
	if w := c.Limits.LockoutWindow; w != nil && *w < 0 {
		errs = append(errs, fmt.Errorf("limits.lockout_window: %s is negative", time.Duration(*w)))
	}
	if w := c.Limits.QueueWait; w != nil && *w < 0 {
		errs = append(errs, fmt.Errorf("limits.queue_wait: %s is negative (0 sheds without waiting)", time.Duration(*w)))
	}
	if c.LogFormat != "" && c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("log_format: %q is neither text nor json", c.LogFormat))
	}
	if strings.ContainsAny(c.TrustDomain, "/:@ ") {
		errs = append(errs, fmt.Errorf("trust_domain: %q must be a bare host name", c.TrustDomain))
	}
	for name, v := range map[string]string{
		"ca.root": c.CA.Root, "ca.intermediate": c.CA.Intermediate, "ca.key": c.CA.Key,
		"tls.cert": c.TLS.Cert, "tls.key": c.TLS.Key, "db.dsn": c.DB.DSN,
	} {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s: required", name))
		}
	}
	switch c.DB.Driver {
	case "sqlite", "postgres":
	default:
		errs = append(errs, fmt.Errorf("db.driver: %q is not sqlite or postgres", c.DB.Driver))
	}
	if c.DB.Migrate != "" && c.DB.Migrate != dbMigrateAuto && c.DB.Migrate != dbMigrateManual {
		errs = append(errs, fmt.Errorf("db.migrate: %q is neither auto nor manual", c.DB.Migrate))
	}
	if c.DB.Prefetch != "" && c.DB.Prefetch != dbPrefetchAuto && c.DB.Prefetch != dbPrefetchOff {
		errs = append(errs, fmt.Errorf("db.prefetch: %q is neither auto nor off", c.DB.Prefetch))
	}
	if u, err := url.Parse(c.ExternalURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
		u.RawQuery != "" || u.Fragment != "" {
		errs = append(errs, fmt.Errorf("external_url: %q is not an http(s):// base URL", c.ExternalURL))
	}
	if c.HTTPListen != "" {
		if host, _, err := net.SplitHostPort(c.HTTPListen); err != nil {
			errs = append(errs, fmt.Errorf("http_listen: %q is not host:port", c.HTTPListen))
		} else if ip := net.ParseIP(host); c.HTTPURL == "" && (host == "" || ip != nil && ip.IsUnspecified()) {
			errs = append(errs, fmt.Errorf("http_url: required when http_listen %q listens on all interfaces (certificates must name a reachable host)", c.HTTPListen))
		}
	}
	if c.HTTPURL != "" {
		if u, err := url.Parse(c.HTTPURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			errs = append(errs, fmt.Errorf("http_url: %q is not an http:// base URL", c.HTTPURL))
		}
	}
	if c.CRL.Validity < Duration(time.Hour) {
		errs = append(errs, fmt.Errorf("crl.validity: %s is shorter than 1h", time.Duration(c.CRL.Validity)))
	}
	if c.CRL.Refresh < Duration(time.Second) || c.CRL.Refresh > c.CRL.Validity/2 {
		errs = append(errs, fmt.Errorf("crl.refresh: %s must be at least 1s and at most half of crl.validity", time.Duration(c.CRL.Refresh)))
	}
	if p := c.CRL.Partitions; p != -1 && (p < 1 || p > pki.MaxCRLPartitions) {
		errs = append(errs, fmt.Errorf("crl.partitions: %d must be from 1 to %d, or -1 for none", p, pki.MaxCRLPartitions))
	}
	if c.OCSP.Validity < Duration(time.Minute) {
		errs = append(errs, fmt.Errorf("ocsp.validity: %s is shorter than 1m", time.Duration(c.OCSP.Validity)))
	}
	if c.OCSP.ResponderLifetime < Duration(time.Hour) || c.OCSP.ResponderLifetime < 2*c.OCSP.Validity {
		errs = append(errs, fmt.Errorf("ocsp.responder_lifetime: %s must be at least 1h and twice ocsp.validity",
			time.Duration(c.OCSP.ResponderLifetime)))
	}
	if c.TPM.ChallengeTTL < 0 || c.TPM.ChallengeTTL > Duration(10*time.Minute) {
		errs = append(errs, fmt.Errorf("tpm.challenge_ttl: %s must be between 0 (default 60s) and 10m", time.Duration(c.TPM.ChallengeTTL)))
	}
	if len(c.TPM.EKRoots) == 0 && !c.TPM.Enabled && (len(c.TPM.EKIntermediates) > 0 || c.TPM.Tenant != "") {
		errs = append(errs, errors.New("tpm: ek_intermediates and tenant need ek_roots or enabled: true"))
	}
	for i, p := range append(append([]string(nil), c.TPM.EKRoots...), c.TPM.EKIntermediates...) {
		if p == "" {
			errs = append(errs, fmt.Errorf("tpm: certificate file %d is empty", i+1))
		}
	}
	if c.Admin.CertLifetime < Duration(time.Hour) || c.Admin.CertLifetime > Duration(8760*time.Hour) {
		errs = append(errs, fmt.Errorf("admin.cert_lifetime: %s is not within [1h, 8760h]", time.Duration(c.Admin.CertLifetime)))
	}
	if c.Enrollment.CertLifetime < Duration(time.Hour) {
		errs = append(errs, fmt.Errorf("enrollment.cert_lifetime: %s is shorter than 1h", time.Duration(c.Enrollment.CertLifetime)))
	}
	switch c.Enrollment.Profile {
	case profileDefault, profileSPIFFE:
	default:
		errs = append(errs, fmt.Errorf("enrollment.profile: %q is not %q (SPIFFE ID and MAC URIs) or %q (SPIFFE ID only)",
			c.Enrollment.Profile, profileDefault, profileSPIFFE))
	}
	errs = append(errs, c.validateMetrics()...)
	errs = append(errs, c.Renew.validate()...)
	errs = append(errs, c.validateMemoryLimit()...)
	return errors.Join(errs...)
}

// PublicationURLs are the CRL, OCSP and caIssuers URLs issued certificates
// name: under HTTPURL when set, else the CRL and OCSP under ExternalURL and
// no caIssuers.
func (c *Config) PublicationURLs() (crl, ocsp, caIssuers string) {
	if c.HTTPURL != "" {
		return c.HTTPURL + "/crl", c.HTTPURL + "/ocsp", c.HTTPURL + "/ca.crt"
	}
	return c.ExternalURL + "/crl", c.ExternalURL + "/ocsp", ""
}

// Path resolves a path from the config relative to the config's directory.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

// KeyURI resolves a relative softkms path in ca.key.
func (c *Config) KeyURI() string {
	k := c.CA.Key
	const soft = "softkms:path="
	switch {
	case strings.HasPrefix(k, soft):
		return soft + c.Path(strings.TrimPrefix(k, soft))
	case !strings.Contains(k, ":"):
		return soft + c.Path(k)
	}
	return k
}

// DSN resolves a relative SQLite file.
func (c *Config) DSN() string {
	if c.DB.Driver == "sqlite" {
		return c.Path(c.DB.DSN)
	}
	return c.DB.DSN
}

// Password reads the key passphrase from password_file or $DEVPKI_PASSWORD.
func (c *Config) Password() ([]byte, error) {
	return readPassword(c.Path(c.PasswordFile))
}

func readPassword(file string) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read password file: %w", err)
		}
		b = bytes.TrimRight(b, "\r\n")
		if len(b) == 0 {
			return nil, fmt.Errorf("password file %s is empty", file)
		}
		return b, nil
	}
	if p := os.Getenv("DEVPKI_PASSWORD"); p != "" {
		return []byte(p), nil
	}
	return nil, errors.New("no key passphrase: pass --password-file FILE or set DEVPKI_PASSWORD (or use --dev for a throwaway setup)")
}

func writeConfig(path string, c *Config) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	head := []byte("# devpki CA configuration, written by 'ca init'. Every key is documented in configs/ca.yaml.\n")
	return atomicfile.Write(path, append(head, b...), 0o600)
}
