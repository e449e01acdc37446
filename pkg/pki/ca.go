package pki

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/smallstep/certificates/cas/apiv1"
	"github.com/smallstep/certificates/cas/softcas"
	"go.step.sm/crypto/kms"
	kmsapi "go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/pemutil"
	"go.step.sm/crypto/x509util"
)

// File names CreateCA writes inside CAOptions.Dir.
const (
	RootCertFile         = "root.crt"
	RootKeyFile          = "root.key"
	IntermediateCertFile = "intermediate.crt"
	IntermediateKeyFile  = "intermediate.key"
)

// Default CA lifetimes.
const (
	DefaultRootLifetime         = 87600 * time.Hour
	DefaultIntermediateLifetime = 43800 * time.Hour
)

// CAOptions configures CreateCA. Dir and Password are required; zero values
// of the other fields mean the documented defaults.
type CAOptions struct {
	Dir                  string        // created (0700) if missing
	Name                 string        // organization; default "devpki"; at most 48 characters (CN "<Name> Intermediate CA" ≤ 64)
	Password             []byte        // required; encrypts both keys
	RootLifetime         time.Duration // default 87600h (10 years)
	IntermediateLifetime time.Duration // default 43800h (5 years); at most RootLifetime
	Now                  func() time.Time
}

// CAFiles are the absolute paths CreateCA wrote: certificates as PEM, keys
// as password-encrypted PKCS#8 PEM with mode 0600.
type CAFiles struct {
	RootCert, RootKey, IntermediateCert, IntermediateKey string
}

// CA is a loaded issuing CA: the root, the intermediate that issues leaf
// certificates, the intermediate's key, and a smallstep CAS that signs with it.
type CA struct {
	Root, Intermediate *x509.Certificate
	Signer             crypto.Signer                     // intermediate key
	CAS                apiv1.CertificateAuthorityService // *softcas.SoftCAS over Signer
}

// CreateCA makes an ECDSA P-256 root (self-signed, CA, pathlen 1) and an
// issuing intermediate (pathlen 0) through softcas.CreateCertificateAuthority,
// writes them to opts.Dir atomically (temp file, fsync, no-clobber link or
// rename, directory fsync) and returns the files and the CA. If any target
// file exists it returns ErrExists and writes nothing.
func CreateCA(ctx context.Context, opts CAOptions) (*CAFiles, *CA, error) {
	if opts.Dir == "" {
		return nil, nil, errors.New("create CA: Dir is required")
	}
	if len(opts.Password) == 0 {
		return nil, nil, errors.New("create CA: Password is required")
	}
	if opts.Name == "" {
		opts.Name = "devpki"
	}
	// Name is the organization of both certificates and the start of their
	// common names; RFC 5280 bounds both (see ValidateSubjectValue).
	for _, v := range []string{opts.Name, opts.Name + " Intermediate CA"} {
		if err := ValidateSubjectValue(v); err != nil {
			return nil, nil, fmt.Errorf("create CA: Name: %w", err)
		}
	}
	if opts.RootLifetime == 0 {
		opts.RootLifetime = DefaultRootLifetime
	}
	if opts.IntermediateLifetime == 0 {
		opts.IntermediateLifetime = DefaultIntermediateLifetime
	}
	if opts.RootLifetime < 0 || opts.IntermediateLifetime < 0 || opts.IntermediateLifetime > opts.RootLifetime {
		return nil, nil, fmt.Errorf("create CA: lifetimes must be positive and the intermediate's (%v) at most the root's (%v)",
			opts.IntermediateLifetime, opts.RootLifetime)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA: %w", err)
	}
	files := &CAFiles{
		RootCert:         filepath.Join(dir, RootCertFile),
		RootKey:          filepath.Join(dir, RootKeyFile),
		IntermediateCert: filepath.Join(dir, IntermediateCertFile),
		IntermediateKey:  filepath.Join(dir, IntermediateKeyFile),
	}
	targets := []string{files.RootKey, files.IntermediateKey, files.RootCert, files.IntermediateCert}
	for _, f := range targets {
		if _, err := os.Lstat(f); err == nil {
			return nil, nil, fmt.Errorf("create CA: %s: %w", f, ErrExists)
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("create CA: %w", err)
		}
	}

	km, err := kms.New(ctx, kmsapi.Options{Type: kmsapi.SoftKMS})
	if err != nil {
		return nil, nil, fmt.Errorf("create CA: %w", err)
	}
	cas, err := softcas.New(ctx, apiv1.Options{IsCreator: true, KeyManager: km})
	if err != nil {
		return nil, nil, fmt.Errorf("create CA: %w", err)
	}
	now := opts.Now()
	caCert := func(cn string, pathLen int, ku x509.KeyUsage, lifetime time.Duration) (*x509.Certificate, error) {
		sn, err := newSerial(rand.Reader)
		if err != nil {
			return nil, err
		}
		c := x509util.Certificate{
			Subject:          x509util.Subject{CommonName: cn, Organization: []string{opts.Name}},
			SerialNumber:     x509util.SerialNumber{Int: sn},
			KeyUsage:         x509util.KeyUsage(ku),
			BasicConstraints: &x509util.BasicConstraints{IsCA: true, MaxPathLen: pathLen},
			NotBefore:        now.Add(-time.Minute),
			NotAfter:         now.Add(lifetime),
		}
		return c.GetCertificate(), nil
	}
	p256 := &apiv1.CreateKeyRequest{SignatureAlgorithm: kmsapi.ECDSAWithSHA256}

	rootTmpl, err := caCert(opts.Name+" Root CA", 1, x509.KeyUsageCertSign|x509.KeyUsageCRLSign, opts.RootLifetime)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA: %w", err)
	}
	root, err := cas.CreateCertificateAuthority(&apiv1.CreateCertificateAuthorityRequest{
		Name: rootTmpl.Subject.CommonName, Type: apiv1.RootCA, Template: rootTmpl,
		Lifetime: opts.RootLifetime, CreateKey: p256,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("create CA: root: %w", err)
	}
	interTmpl, err := caCert(opts.Name+" Intermediate CA", 0,
		x509.KeyUsageCertSign|x509.KeyUsageCRLSign|x509.KeyUsageDigitalSignature, opts.IntermediateLifetime)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA: %w", err)
	}
	inter, err := cas.CreateCertificateAuthority(&apiv1.CreateCertificateAuthorityRequest{
		Name: interTmpl.Subject.CommonName, Type: apiv1.IntermediateCA, Template: interTmpl,
		Lifetime: opts.IntermediateLifetime, CreateKey: p256, Parent: root,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("create CA: intermediate: %w", err)
	}

	contents := make([][]byte, 0, 4)
	for _, k := range []crypto.PrivateKey{root.PrivateKey, inter.PrivateKey} {
		block, err := pemutil.Serialize(k, pemutil.WithPassword(opts.Password), pemutil.WithPKCS8(true))
		if err != nil {
			return nil, nil, fmt.Errorf("create CA: encrypt key: %w", err)
		}
		contents = append(contents, pem.EncodeToMemory(block))
	}
	for _, c := range []*x509.Certificate{root.Certificate, inter.Certificate} {
		contents = append(contents, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("create CA: %w", err)
	}
	if err := writeFilesAtomic(dir, targets, contents, []os.FileMode{0o600, 0o600, 0o644, 0o644}); err != nil {
		return nil, nil, fmt.Errorf("create CA: %w", err)
	}
	ca, err := newCA(ctx, root.Certificate, inter.Certificate, inter.Signer)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA: %w", err)
	}
	return files, ca, nil
}

// writeFilesAtomic writes every file to a temp file in dir, fsyncs it, then
// publishes each without overwriting anything (hard link, or rename where
// links are unsupported), fsyncs dir, and removes what it published if a
// later step fails.
func writeFilesAtomic(dir string, names []string, contents [][]byte, modes []os.FileMode) (err error) {
	var temps, published []string
	defer func() {
		for _, t := range temps {
			os.Remove(t)
		}
		if err != nil {
			for _, p := range published {
				os.Remove(p)
			}
		}
	}()
	for i, name := range names {
		f, err := os.CreateTemp(dir, "."+filepath.Base(name)+".tmp*")
		if err != nil {
			return err
		}
		temps = append(temps, f.Name())
		if err := f.Chmod(modes[i]); err != nil {
			f.Close()
			return err
		}
		if _, err := f.Write(contents[i]); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	for i, name := range names {
		if err := os.Link(temps[i], name); err != nil {
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%s: %w", name, ErrExists)
			}
			// No hard links here: fall back to rename after a last check.
			if _, serr := os.Lstat(name); serr == nil {
				return fmt.Errorf("%s: %w", name, ErrExists)
			}
			if err := os.Rename(temps[i], name); err != nil {
				return err
			}
		}
		published = append(published, name)
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// LoadOptions says where LoadCA finds the CA. KeyURI is a go.step.sm/crypto
// KMS URI ("softkms:path=/x/intermediate.key") or a plain path (softkms);
// other KMS types need their backend linked into the binary.
type LoadOptions struct {
	RootCert, IntermediateCert string // PEM files
	KeyURI                     string
	Password                   []byte // decrypts a softkms key; nil for none
}

// LoadCA loads the root and intermediate certificates and the intermediate
// key through the KMS, checks that the key matches the intermediate and that
// the intermediate is a CA signed by the root, and returns the CA. A wrong
// password yields an error wrapping ErrWrongPassword.
func LoadCA(ctx context.Context, opts LoadOptions) (*CA, error) {
	root, err := readCert(opts.RootCert)
	if err != nil {
		return nil, fmt.Errorf("load CA: root: %w", err)
	}
	inter, err := readCert(opts.IntermediateCert)
	if err != nil {
		return nil, fmt.Errorf("load CA: intermediate: %w", err)
	}
	if opts.KeyURI == "" {
		return nil, errors.New("load CA: KeyURI is required")
	}
	kopts := kmsapi.Options{Type: kmsapi.SoftKMS}
	if i := strings.IndexByte(opts.KeyURI, ':'); i > 0 && !strings.EqualFold(opts.KeyURI[:i], "softkms") && !filepath.IsAbs(opts.KeyURI) {
		typ, err := kmsapi.TypeOf(opts.KeyURI)
		if err != nil {
			return nil, fmt.Errorf("load CA: key URI %q: %w", opts.KeyURI, err)
		}
		kopts = kmsapi.Options{Type: typ, URI: opts.KeyURI}
	}
	km, err := kms.New(ctx, kopts)
	if err != nil {
		return nil, fmt.Errorf("load CA: key URI %q: %w", opts.KeyURI, err)
	}
	defer km.Close()
	signer, err := km.CreateSigner(&kmsapi.CreateSignerRequest{SigningKey: opts.KeyURI, Password: opts.Password})
	if err != nil {
		if errors.Is(err, x509.IncorrectPasswordError) {
			return nil, fmt.Errorf("load CA: key %q: %w", opts.KeyURI, ErrWrongPassword)
		}
		if len(opts.Password) == 0 && strings.Contains(err.Error(), "password") {
			return nil, fmt.Errorf("load CA: key %q is encrypted and no password was given: %w", opts.KeyURI, ErrWrongPassword)
		}
		return nil, fmt.Errorf("load CA: key %q: %w", opts.KeyURI, err)
	}
	ca, err := newCA(ctx, root, inter, signer)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	return ca, nil
}

// newCA checks the pieces fit together and wraps them in a softcas.
func newCA(ctx context.Context, root, inter *x509.Certificate, signer crypto.Signer) (*CA, error) {
	if !root.IsCA || root.CheckSignatureFrom(root) != nil {
		return nil, errors.New("root certificate is not a self-signed CA")
	}
	if !inter.IsCA {
		return nil, errors.New("intermediate certificate is not a CA")
	}
	if err := inter.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("intermediate does not chain to root: %w", err)
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(inter.PublicKey) {
		return nil, errors.New("CA key does not match the intermediate certificate")
	}
	cas, err := softcas.New(ctx, apiv1.Options{CertificateChain: []*x509.Certificate{inter}, Signer: signer})
	if err != nil {
		return nil, err
	}
	return &CA{Root: root, Intermediate: inter, Signer: signer, CAS: cas}, nil
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := pemutil.ParseCertificate(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// newSerial returns a positive, non-zero serial from 20 bytes of r with the
// top bit cleared.
func newSerial(r io.Reader) (*big.Int, error) {
	var b [20]byte
	for range 4 {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("serial number: %w", err)
		}
		b[0] &= 0x7f
		if sn := new(big.Int).SetBytes(b[:]); sn.Sign() > 0 {
			return sn, nil
		}
	}
	return nil, errors.New("serial number: random source returned only zeros")
}
