package pki

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.step.sm/crypto/kms"
	kmsapi "go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/pemutil"
)

// KeyID names a CA certificate: the hex of its subject key identifier (the
// authority key identifier of what it signs).
func KeyID(c *x509.Certificate) string { return hex.EncodeToString(c.SubjectKeyId) }

// AuthorityKeyID is the hex authority key identifier of c: the KeyID of its
// issuer.
func AuthorityKeyID(c *x509.Certificate) string { return hex.EncodeToString(c.AuthorityKeyId) }

// LoadSigner opens the CA key at keyURI: a softkms URI or plain path (an
// encrypted PEM, decrypted with password) or another KMS URI whose backend
// is linked in. It is the one place rollover loads issuer keys, so an HSM
// key (pkcs11:...) slots in by URI. A wrong password wraps
// ErrWrongPassword.
func LoadSigner(ctx context.Context, keyURI string, password []byte) (crypto.Signer, error) {
	if keyURI == "" {
		return nil, errors.New("load key: key URI is required")
	}
	kopts := kmsapi.Options{Type: kmsapi.SoftKMS}
	if i := strings.IndexByte(keyURI, ':'); i > 0 && !strings.EqualFold(keyURI[:i], "softkms") && !filepath.IsAbs(keyURI) {
		typ, err := kmsapi.TypeOf(keyURI)
		if err != nil {
			return nil, fmt.Errorf("load key %q: %w", keyURI, err)
		}
		kopts = kmsapi.Options{Type: typ, URI: keyURI}
	}
	km, err := kms.New(ctx, kopts)
	if err != nil {
		return nil, fmt.Errorf("load key %q: %w", keyURI, err)
	}
	defer km.Close()
	signer, err := km.CreateSigner(&kmsapi.CreateSignerRequest{SigningKey: keyURI, Password: password})
	if err != nil {
		if errors.Is(err, x509.IncorrectPasswordError) || (len(password) == 0 && strings.Contains(err.Error(), "password")) {
			return nil, fmt.Errorf("load key %q: %w", keyURI, ErrWrongPassword)
		}
		return nil, fmt.Errorf("load key %q: %w", keyURI, err)
	}
	return signer, nil
}

// NewCAFromParts checks that root, inter and the intermediate's signer fit
// together (as LoadCA does) and returns the CA.
func NewCAFromParts(ctx context.Context, root, inter *x509.Certificate, signer crypto.Signer) (*CA, error) {
	return newCA(ctx, root, inter, signer)
}

// RolloverOptions configures CreateRollover. Dir, Password, Root and
// RootSigner are required.
type RolloverOptions struct {
	Dir      string // where the new files go, next to the CA's
	Password []byte // encrypts the new keys, as 'ca init' does
	// Root and RootSigner are the current root and its key: they sign the
	// new intermediate, or cross-sign the new root.
	Root       *x509.Certificate
	RootSigner crypto.Signer
	// NewRoot: make a new root too, and the new intermediate under it.
	NewRoot              bool
	Name                 string        // organization; default: the current root's
	RootLifetime         time.Duration // default DefaultRootLifetime
	IntermediateLifetime time.Duration // default DefaultIntermediateLifetime
	Now                  func() time.Time
}

// Rollover is what CreateRollover made and wrote.
type Rollover struct {
	Intermediate *x509.Certificate
	Root         *x509.Certificate // the new root, or the current one
	// Cross is the new root's subject and key signed by the current root:
	// the proof a device that trusts only the current root checks before
	// it trusts the new one. Nil for an intermediate rollover.
	Cross *x509.Certificate
	// Files written (absolute): IntermediateKey and RootKey are encrypted
	// PKCS#8 PEM, mode 0600; RootKey is empty without a new root.
	IntermediateCert, IntermediateKey, RootCert, RootKey, CrossCert string
}

// CreateRollover makes a new ECDSA P-256 issuing intermediate (pathlen 0)
// under opts.Root, or — with NewRoot — a new self-signed root (pathlen 1),
// an intermediate under it and the cross certificate of the new root by the
// current one; it writes keys (encrypted with opts.Password) and
// certificates to opts.Dir without overwriting anything, named after the new
// intermediate's key id.
func CreateRollover(ctx context.Context, opts RolloverOptions) (*Rollover, error) {
	if opts.Dir == "" || len(opts.Password) == 0 || opts.Root == nil || opts.RootSigner == nil {
		return nil, errors.New("create rollover: Dir, Password, Root and RootSigner are required")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if pub, ok := opts.RootSigner.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(opts.Root.PublicKey) {
		return nil, errors.New("create rollover: the root key does not match the root certificate")
	}
	if opts.Name == "" {
		opts.Name = "devpki"
		if o := opts.Root.Subject.Organization; len(o) > 0 {
			opts.Name = o[0]
		}
	}
	if opts.RootLifetime == 0 {
		opts.RootLifetime = DefaultRootLifetime
	}
	if opts.IntermediateLifetime == 0 {
		opts.IntermediateLifetime = DefaultIntermediateLifetime
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	now := opts.Now()
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("create rollover: %w", err)
	}
	// Names differ from every earlier CA's: chain building by name then
	// never meets a namesake with another key.
	var suffix [2]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return nil, fmt.Errorf("create rollover: %w", err)
	}
	stamp := now.UTC().Format("20060102") + "-" + hex.EncodeToString(suffix[:])
	parent, parentKey := opts.Root, opts.RootSigner
	out := &Rollover{Root: opts.Root}
	var rootKey *ecdsa.PrivateKey
	if opts.NewRoot {
		if rootKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, fmt.Errorf("create rollover: %w", err)
		}
		tmpl, err := caTemplate(opts.Name+" Root CA "+stamp, opts.Name, 1, now, opts.RootLifetime)
		if err != nil {
			return nil, fmt.Errorf("create rollover: %w", err)
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, rootKey.Public(), rootKey)
		if err != nil {
			return nil, fmt.Errorf("create rollover: root: %w", err)
		}
		if out.Root, err = x509.ParseCertificate(der); err != nil {
			return nil, err
		}
		// The cross certificate: the new root's name and key, issued by the
		// current root, no longer than the current root lives.
		cross := *tmpl
		if cross.SerialNumber, err = newSerial(rand.Reader); err != nil {
			return nil, err
		}
		cross.SubjectKeyId = out.Root.SubjectKeyId
		if cross.NotAfter.After(opts.Root.NotAfter) {
			cross.NotAfter = opts.Root.NotAfter
		}
		der, err = x509.CreateCertificate(rand.Reader, &cross, opts.Root, rootKey.Public(), opts.RootSigner)
		if err != nil {
			return nil, fmt.Errorf("create rollover: cross-sign the new root: %w", err)
		}
		if out.Cross, err = x509.ParseCertificate(der); err != nil {
			return nil, err
		}
		parent, parentKey = out.Root, rootKey
	}
	interKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("create rollover: %w", err)
	}
	life := opts.IntermediateLifetime
	if max := parent.NotAfter.Sub(now); life > max {
		life = max
	}
	if life <= 0 {
		return nil, fmt.Errorf("create rollover: the root expired at %v", parent.NotAfter)
	}
	tmpl, err := caTemplate(opts.Name+" Intermediate CA "+stamp, opts.Name, 0, now, life)
	if err != nil {
		return nil, fmt.Errorf("create rollover: %w", err)
	}
	tmpl.KeyUsage |= x509.KeyUsageDigitalSignature
	tmpl.AuthorityKeyId = parent.SubjectKeyId
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, interKey.Public(), parentKey)
	if err != nil {
		return nil, fmt.Errorf("create rollover: intermediate: %w", err)
	}
	if out.Intermediate, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}

	kid := KeyID(out.Intermediate)[:16]
	names := []string{filepath.Join(dir, "intermediate-"+kid+".key"), filepath.Join(dir, "intermediate-"+kid+".crt")}
	keys := []crypto.PrivateKey{interKey}
	certs := []*x509.Certificate{out.Intermediate}
	out.IntermediateKey, out.IntermediateCert = names[0], names[1]
	if opts.NewRoot {
		out.RootKey, out.RootCert, out.CrossCert = filepath.Join(dir, "root-"+kid+".key"), filepath.Join(dir, "root-"+kid+".crt"),
			filepath.Join(dir, "cross-"+kid+".crt")
		names = append(names, out.RootKey, out.RootCert, out.CrossCert)
		keys = append(keys, rootKey)
		certs = append(certs, out.Root, out.Cross)
	}
	var contents [][]byte
	var modes []os.FileMode
	ki, ci := 0, 0
	for _, n := range names {
		if strings.HasSuffix(n, ".key") {
			block, err := pemutil.Serialize(keys[ki], pemutil.WithPassword(opts.Password), pemutil.WithPKCS8(true))
			if err != nil {
				return nil, fmt.Errorf("create rollover: encrypt key: %w", err)
			}
			ki++
			contents, modes = append(contents, pem.EncodeToMemory(block)), append(modes, 0o600)
			continue
		}
		contents = append(contents, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certs[ci].Raw}))
		modes = append(modes, 0o644)
		ci++
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create rollover: %w", err)
	}
	if err := writeFilesAtomic(dir, names, contents, modes); err != nil {
		return nil, fmt.Errorf("create rollover: %w", err)
	}
	return out, nil
}

func caTemplate(cn, org string, pathLen int, now time.Time, life time.Duration) (*x509.Certificate, error) {
	if ValidateSubjectValue(cn) != nil && strings.HasPrefix(cn, org+" ") {
		cn = strings.TrimPrefix(cn, org+" ") // a long organization: the role and date alone
	}
	for _, v := range []string{cn, org} {
		if err := ValidateSubjectValue(v); err != nil {
			return nil, fmt.Errorf("name: %w", err)
		}
	}
	sn, err := newSerial(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{org}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(life),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            pathLen,
		MaxPathLenZero:        pathLen == 0,
	}, nil
}

// ErrRootNotVouched: a root in a trust bundle is neither trusted already nor
// cross-signed by a trusted root.
var ErrRootNotVouched = errors.New("pki: new root not vouched for by a trusted root")

// AdoptRoots decides which roots of a served trust bundle a relying party
// that trusts trusted may add: a self-signed CA in bundle that it does not
// trust yet is adopted only when bundle also holds a cross certificate for
// it — same subject and public key, a CA, valid at now — whose signature
// verifies under a trusted root. It returns the roots to add and, for each
// root refused, an error wrapping ErrRootNotVouched.
func AdoptRoots(trusted, bundle []*x509.Certificate, now time.Time) (adopted []*x509.Certificate, refused []error) {
	known := func(c *x509.Certificate, set []*x509.Certificate) bool {
		for _, t := range set {
			if t.Equal(c) {
				return true
			}
		}
		return false
	}
	for _, c := range bundle {
		if !isSelfSigned(c) || known(c, trusted) || known(c, adopted) {
			continue
		}
		if !c.IsCA {
			refused = append(refused, fmt.Errorf("%w: %q (%s) is not a CA", ErrRootNotVouched, c.Subject, Fingerprint(c)))
			continue
		}
		vouched := false
		for _, x := range bundle {
			if x == c || isSelfSigned(x) || !x.IsCA || string(x.RawSubject) != string(c.RawSubject) ||
				string(x.RawSubjectPublicKeyInfo) != string(c.RawSubjectPublicKeyInfo) ||
				now.Before(x.NotBefore) || now.After(x.NotAfter) {
				continue
			}
			for _, t := range trusted {
				if x.CheckSignatureFrom(t) == nil && !now.After(t.NotAfter) {
					vouched = true
					break
				}
			}
			if vouched {
				break
			}
		}
		if !vouched {
			refused = append(refused, fmt.Errorf("%w: %q (fingerprint %s): no cross certificate signed by a root already trusted",
				ErrRootNotVouched, c.Subject, Fingerprint(c)))
			continue
		}
		adopted = append(adopted, c)
	}
	return adopted, refused
}

func isSelfSigned(c *x509.Certificate) bool {
	return string(c.RawSubject) == string(c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}
