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

	// KMS, when set, is a PKCS#11 URI naming a token
	// ("pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=devpki?pin-source=/etc/devpki/pin"):
	// the intermediate key is made inside the token (ECDSA P-256, a random
	// id, label devpki-intermediate-<id>) and never exists anywhere else;
	// no intermediate.key is written and CAFiles.IntermediateKeyURI names
	// the key. The root key stays an encrypted root.key unless RootInKMS.
	KMS string
	// IntermediateKey, with KMS, names an existing key in the token
	// ("pkcs11:id=…;object=…"; token attributes may be left out) that the
	// intermediate certifies instead of a new one.
	IntermediateKey string
	// RootInKMS, with KMS, makes the root key in the token as well (label
	// devpki-root-<id>) instead of root.key; CAFiles.RootKeyURI names it.
	RootInKMS bool
}

// CAFiles are the absolute paths CreateCA wrote: certificates as PEM, keys
// as password-encrypted PKCS#8 PEM with mode 0600. A key made in a PKCS#11
// token has no file (RootKey or IntermediateKey is empty) and a URI instead.
type CAFiles struct {
	RootCert, RootKey, IntermediateCert, IntermediateKey string
	// RootKeyURI and IntermediateKeyURI are the pkcs11: URIs of keys in a
	// token (CAOptions.KMS): the token's attributes, the PIN attribute as
	// given, and the key's id and object; what ca.key holds.
	RootKeyURI, IntermediateKeyURI string
}

// CA is a loaded issuing CA: the root, the intermediate that issues leaf
// certificates, the intermediate's key, and a smallstep CAS that signs with it.
type CA struct {
	Root, Intermediate *x509.Certificate
	Signer             crypto.Signer                     // intermediate key
	CAS                apiv1.CertificateAuthorityService // *softcas.SoftCAS over Signer

	keys    io.Closer // the key store behind Signer (PKCS#11 sessions); nil for none
	created []string  // keys CreateCA made in a token, for DeleteCreatedKeys
}

// Close releases the key store behind Signer (a PKCS#11 token's sessions);
// the CA must not sign after it. It is a no-op for file keys.
func (c *CA) Close() error {
	if c == nil || c.keys == nil {
		return nil
	}
	return c.keys.Close()
}

// DeleteCreatedKeys deletes from the token the keys CreateCA made there
// (never a key that CreateCA was given): for a caller whose setup failed
// after CreateCA returned, so that a failed 'ca init' leaves nothing behind.
func (c *CA) DeleteCreatedKeys() error {
	if c == nil {
		return nil
	}
	d, ok := c.keys.(keyDeleter)
	if !ok {
		return nil
	}
	var errs []error
	for _, k := range c.created {
		errs = append(errs, d.DeleteKey(k))
	}
	c.created = nil
	return errors.Join(errs...)
}

// keyDeleter is what go.step.sm/crypto/kms/pkcs11 offers to remove a key.
type keyDeleter interface{ DeleteKey(uri string) error }

// CreateCA makes an ECDSA P-256 root (self-signed, CA, pathlen 1) and an
// issuing intermediate (pathlen 0) through softcas.CreateCertificateAuthority,
// writes them to opts.Dir atomically (temp file, fsync, no-clobber link or
// rename, directory fsync) and returns the files and the CA. If any target
// file exists it returns ErrExists and writes nothing. With opts.KMS the
// intermediate key (and with RootInKMS the root key) lives in a PKCS#11
// token; a failure deletes the keys it made there and writes nothing.
func CreateCA(ctx context.Context, opts CAOptions) (_ *CAFiles, _ *CA, err error) {
	if opts.Dir == "" {
		return nil, nil, errors.New("create CA: Dir is required")
	}
	if len(opts.Password) == 0 && !(opts.KMS != "" && opts.RootInKMS) {
		return nil, nil, errors.New("create CA: Password is required")
	}
	if opts.KMS == "" && (opts.IntermediateKey != "" || opts.RootInKMS) {
		return nil, nil, errors.New("create CA: IntermediateKey and RootInKMS need KMS (a pkcs11: token URI)")
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
	rootCAS, err := softcas.New(ctx, apiv1.Options{IsCreator: true, KeyManager: km})
	if err != nil {
		return nil, nil, fmt.Errorf("create CA: %w", err)
	}
	interCAS := rootCAS
	rootKey := &apiv1.CreateKeyRequest{SignatureAlgorithm: kmsapi.ECDSAWithSHA256}
	interKey := &apiv1.CreateKeyRequest{SignatureAlgorithm: kmsapi.ECDSAWithSHA256}
	var token *tokenKeys
	if opts.KMS != "" {
		token, err = openTokenKeys(ctx, opts)
		if err != nil {
			return nil, nil, fmt.Errorf("create CA: %w", err)
		}
		defer func() {
			if err != nil {
				token.discard()
			}
		}()
		if opts.RootInKMS {
			if rootCAS, err = softcas.New(ctx, apiv1.Options{IsCreator: true, KeyManager: token}); err != nil {
				return nil, nil, fmt.Errorf("create CA: %w", err)
			}
			rootKey.Name = token.rootURI
			files.RootKey, files.RootKeyURI = "", token.rootURI
		}
		if interCAS, err = softcas.New(ctx, apiv1.Options{IsCreator: true, KeyManager: token}); err != nil {
			return nil, nil, fmt.Errorf("create CA: %w", err)
		}
		interKey.Name = token.interURI
		files.IntermediateKey, files.IntermediateKeyURI = "", token.interURI
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

	rootTmpl, err := caCert(opts.Name+" Root CA", 1, x509.KeyUsageCertSign|x509.KeyUsageCRLSign, opts.RootLifetime)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA: %w", err)
	}
	root, err := rootCAS.CreateCertificateAuthority(&apiv1.CreateCertificateAuthorityRequest{
		Name: rootTmpl.Subject.CommonName, Type: apiv1.RootCA, Template: rootTmpl,
		Lifetime: opts.RootLifetime, CreateKey: rootKey,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("create CA: root: %w", err)
	}
	interTmpl, err := caCert(opts.Name+" Intermediate CA", 0,
		x509.KeyUsageCertSign|x509.KeyUsageCRLSign|x509.KeyUsageDigitalSignature, opts.IntermediateLifetime)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA: %w", err)
	}
	inter, err := interCAS.CreateCertificateAuthority(&apiv1.CreateCertificateAuthorityRequest{
		Name: interTmpl.Subject.CommonName, Type: apiv1.IntermediateCA, Template: interTmpl,
		Lifetime: opts.IntermediateLifetime, CreateKey: interKey, Parent: root,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("create CA: intermediate: %w", err)
	}

	var names []string
	var contents [][]byte
	var modes []os.FileMode
	// Only keys made in memory (softkms) have a file; a token's never leave it.
	for _, k := range []struct {
		file string
		key  crypto.PrivateKey
	}{{files.RootKey, root.PrivateKey}, {files.IntermediateKey, inter.PrivateKey}} {
		if k.file == "" {
			continue
		}
		block, err := pemutil.Serialize(k.key, pemutil.WithPassword(opts.Password), pemutil.WithPKCS8(true))
		if err != nil {
			return nil, nil, fmt.Errorf("create CA: encrypt key: %w", err)
		}
		names, contents, modes = append(names, k.file), append(contents, pem.EncodeToMemory(block)), append(modes, 0o600)
	}
	for i, c := range []*x509.Certificate{root.Certificate, inter.Certificate} {
		names = append(names, []string{files.RootCert, files.IntermediateCert}[i])
		contents = append(contents, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
		modes = append(modes, 0o644)
	}
	ca, err := newCA(ctx, root.Certificate, inter.Certificate, inter.Signer)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("create CA: %w", err)
	}
	if err := writeFilesAtomic(dir, names, contents, modes); err != nil {
		return nil, nil, fmt.Errorf("create CA: %w", err)
	}
	if token != nil {
		ca.keys, ca.created = token.km, token.created
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
// KMS URI ("softkms:path=/x/intermediate.key"), a plain path (softkms), or
// a "pkcs11:…" URI (see OpenSigner); other KMS types, PKCS#11 included,
// need their backend linked into the binary (cmd/ca links PKCS#11).
type LoadOptions struct {
	RootCert, IntermediateCert string // PEM files
	KeyURI                     string
	Password                   []byte // decrypts a softkms key; nil for none
}

// LoadCA loads the root and intermediate certificates and the intermediate
// key through the KMS, checks that the key matches the intermediate and that
// the intermediate is a CA signed by the root, and returns the CA. A wrong
// password yields an error wrapping ErrWrongPassword. Close the CA when
// done with it (a token's sessions stay open until then).
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
	signer, keys, err := OpenSigner(ctx, opts.KeyURI, opts.Password)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	ca, err := newCA(ctx, root, inter, signer)
	if err != nil {
		keys.Close()
		return nil, fmt.Errorf("load CA: %w", err)
	}
	// A file key is in memory now; a token's key needs its sessions open.
	if IsPKCS11(opts.KeyURI) {
		ca.keys = keys
	} else {
		keys.Close()
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
