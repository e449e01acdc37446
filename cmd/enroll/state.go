package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.step.sm/crypto/pemutil"

	"devpki/api/client"
	"devpki/pkg/atomicfile"
	"devpki/pkg/pki"
)

// Files of the state directory. device.crt is written last: its presence
// marks a completed enrollment.
const (
	keyFile      = "device.key"
	passwordFile = "device.key.password"
	certFile     = "device.crt"
	chainFile    = "chain.pem"
	rootFile     = "root.crt"
)

// writeFileAtomic replaces path with data and mode perm so that a crash at any
// point leaves either the old file or the new one: temp file in the same
// directory (mode set before any byte is written), write, fsync, close,
// rename, fsync the directory.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	return atomicfile.Write(path, data, perm)
}

// removeDurable removes path (if present) and syncs its directory.
func removeDurable(path string) error {
	if err := os.Remove(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(path))
}

// ensureStateDir creates dir with mode 0700 if it does not exist.
func ensureStateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	return nil
}

// keyPassword returns the password that protects device.key: the contents of
// passwordPath when given (trailing newline trimmed), else those of
// STATE/device.key.password, which is created with 32 random bytes
// (base64url) when missing. With create false a missing file is an error.
func keyPassword(dir, passwordPath string, create bool) ([]byte, error) {
	if passwordPath != "" {
		return readPassword(passwordPath)
	}
	p := filepath.Join(dir, passwordFile)
	pw, err := readPassword(p)
	if err == nil || !errors.Is(err, fs.ErrNotExist) || !create {
		return pw, err
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, fmt.Errorf("generate key password: %w", err)
	}
	pw = []byte(base64.RawURLEncoding.EncodeToString(raw[:]))
	if err := writeFileAtomic(p, append(pw, '\n'), 0o600); err != nil {
		return nil, err
	}
	return pw, nil
}

func readPassword(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key password: %w", err)
	}
	pw := []byte(strings.TrimRight(string(b), "\r\n"))
	if len(pw) == 0 {
		return nil, fmt.Errorf("key password file %s is empty", path)
	}
	return pw, nil
}

// encodeKey returns key as an encrypted PKCS#8 PEM (PBES2, PBKDF2, AES-256-CBC).
func encodeKey(key crypto.PrivateKey, pw []byte) ([]byte, error) {
	block, err := pemutil.Serialize(key, pemutil.WithPassword(pw), pemutil.WithPKCS8(true))
	if err != nil {
		return nil, fmt.Errorf("encrypt device key: %w", err)
	}
	return pem.EncodeToMemory(block), nil
}

func encodeCerts(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

// identity is a device's enrolled key and certificates.
type identity struct {
	Key   crypto.Signer
	Cert  *x509.Certificate
	Chain []*x509.Certificate // intermediates, issuer first
	Root  *x509.Certificate
	// Extra are the roots adopted after Root (a CA root rollover, each
	// vouched for by a root already trusted: adoptTrust); root.crt holds
	// Root then Extra.
	Extra []*x509.Certificate
}

// roots is the trust bundle: the pinned root first.
func (id *identity) roots() []*x509.Certificate {
	return append([]*x509.Certificate{id.Root}, id.Extra...)
}

// verifyIdentity checks that id is usable at now: the key matches the
// certificate, and the certificate chains through id.Chain to id.Root for
// client authentication (which also checks every validity period). A clock
// behind the certificate's notBefore — a device without a real-time clock at
// first boot — is judged at notBefore instead: only expiry is held against it.
func verifyIdentity(id *identity, now time.Time) error {
	if now.Before(id.Cert.NotBefore) {
		now = id.Cert.NotBefore
	}
	pub, ok := id.Key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(id.Cert.PublicKey) {
		return errors.New("key does not match certificate")
	}
	roots := x509.NewCertPool()
	for _, r := range id.roots() {
		roots.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range id.Chain {
		inter.AddCert(c)
	}
	if _, err := id.Cert.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return fmt.Errorf("certificate does not verify: %w", err)
	}
	return nil
}

// generation names the files of one key, certificate and chain: the
// current ones, or the .next and .prev copies a renewal keeps (renew.go).
type generation struct{ key, cert, chain string }

// current is the identity every consumer reads.
var current = generation{key: keyFile, cert: certFile, chain: chainFile}

// loadIdentity reads and checks the identity in kr.dir. It returns
// fs.ErrNotExist (wrapped) when device.crt is absent, and another error when
// the files are there but do not form a valid identity pinned to pin at now.
func loadIdentity(ctx context.Context, kr *keyring, pin string, now time.Time) (*identity, error) {
	return loadGeneration(ctx, kr, current, pin, now)
}

// loadGeneration is loadIdentity for the files of g.
func loadGeneration(ctx context.Context, kr *keyring, g generation, pin string, now time.Time) (*identity, error) {
	dir := kr.dir
	certPEM, err := os.ReadFile(filepath.Join(dir, g.cert))
	if err != nil {
		return nil, err
	}
	certs, err := client.ParseCertificatesPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", g.cert, err)
	}
	id := &identity{Cert: certs[0]}

	// From here a missing file is a broken identity, not "not enrolled":
	// %v keeps fs.ErrNotExist from leaking through.
	rootPEM, err := os.ReadFile(filepath.Join(dir, rootFile))
	if err != nil {
		return nil, fmt.Errorf("%v", err)
	}
	roots, err := client.ParseCertificatesPEM(rootPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", rootFile, err)
	}
	id.Root, id.Extra = roots[0], roots[1:]
	if fp := pki.Fingerprint(id.Root); fp != pin {
		return nil, fmt.Errorf("%s has fingerprint %s, not the pinned %s", rootFile, fp, pin)
	}

	chainPEM, err := os.ReadFile(filepath.Join(dir, g.chain))
	if err != nil {
		return nil, fmt.Errorf("%v", err)
	}
	if len(strings.TrimSpace(string(chainPEM))) > 0 {
		if id.Chain, err = client.ParseCertificatesPEM(chainPEM); err != nil {
			return nil, fmt.Errorf("%s: %w", g.chain, err)
		}
	}

	keyPEM, err := os.ReadFile(filepath.Join(dir, g.key))
	if err != nil {
		return nil, fmt.Errorf("%v", err)
	}
	if id.Key, err = kr.parse(ctx, keyPEM, g.key); err != nil {
		return nil, err
	}
	if err := verifyIdentity(id, now); err != nil {
		return nil, err
	}
	return id, nil
}

// saveIdentity writes id into kr.dir: the key (encrypted, or a TPM key
// reference) first, then chain.pem and root.crt, and device.crt last. A stale
// device.crt is removed before the key is replaced, so a crash never leaves a
// certificate beside a key it does not belong to.
func saveIdentity(kr *keyring, id *identity) error {
	dir := kr.dir
	keyPEM, err := kr.encode(id.Key)
	if err != nil {
		return err
	}
	if err := removeDurable(filepath.Join(dir, certFile)); err != nil {
		return fmt.Errorf("remove stale %s: %w", certFile, err)
	}
	for _, f := range []struct {
		name string
		data []byte
		perm fs.FileMode
	}{
		{keyFile, keyPEM, 0o600},
		{chainFile, encodeCerts(id.Chain...), 0o644},
		{rootFile, encodeCerts(id.roots()...), 0o644},
		{certFile, encodeCerts(id.Cert), 0o644},
	} {
		if err := writeFileAtomic(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return err
		}
	}
	return nil
}

// pendingKey returns the key of an enrollment that sent its CSR but never
// stored a certificate (device.key present, device.crt absent), or makes a
// new P-256 key and stores it (encrypted with pw) before it is used.
func pendingKey(dir string, pw []byte, logf func(string, ...any)) (crypto.Signer, error) {
	if _, err := os.Stat(filepath.Join(dir, certFile)); errors.Is(err, fs.ErrNotExist) {
		if b, err := os.ReadFile(filepath.Join(dir, keyFile)); err == nil {
			if k, err := pemutil.ParseKey(b, pemutil.WithPassword(pw)); err == nil {
				if signer, ok := k.(crypto.Signer); ok {
					logf("reusing the key of an unfinished enrollment")
					return signer, nil
				}
			}
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate device key: %w", err)
	}
	keyPEM, err := encodeKey(key, pw)
	if err != nil {
		return nil, err
	}
	// A certificate left from an identity that is no longer usable must not
	// sit beside the new key.
	if err := removeDurable(filepath.Join(dir, certFile)); err != nil {
		return nil, fmt.Errorf("remove stale %s: %w", certFile, err)
	}
	if err := writeFileAtomic(filepath.Join(dir, keyFile), keyPEM, 0o600); err != nil {
		return nil, err
	}
	return key, nil
}
