package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"go.step.sm/crypto/pemutil"

	"devpki/api/wire"
	"devpki/pkg/tpm"
)

// Keys in the state directory. A software key is an encrypted PKCS#8 PEM in
// device.key. A TPM key never leaves the TPM: device.key then holds a
// reference — a PEM block of type tpmKeyBlock whose Key-Name header names the
// key's blob in STATE/tpm (wrapped by the TPM's storage root key) and whose
// body is the key's public key, checked against the TPM's on load. Because
// the reference sits where the PEM would, renewal's .next/.prev generations
// and crash recovery work the same for both.
const (
	tpmKeyBlock = "DEVPKI TPM KEY"
	tpmStateDir = "tpm"      // STATE/tpm: AK and key blobs (pkg/tpm)
	tpmInfoFile = "tpm.json" // which TPM holds the keys
	akName      = "devpki-ak"
)

// tpmInfo is the content of tpmInfoFile.
type tpmInfo struct {
	Spec string `json:"spec"` // as given to --tpm: auto, a path, swtpm:unix:PATH...
	AK   string `json:"ak"`
}

// keyring reads and writes the device's keys. It opens the TPM on first need
// and keeps it open until close.
type keyring struct {
	dir          string
	passwordPath string // --key-password-file, or "" for STATE/device.key.password
	tpmSpec      string // --tpm override for an enrolled TPM identity; "" reads tpmInfoFile
	tpm          *tpm.TPM
}

func newKeyring(dir, passwordPath string) *keyring {
	return &keyring{dir: dir, passwordPath: passwordPath}
}

func (k *keyring) close() {
	if k.tpm != nil {
		k.tpm.Close()
		k.tpm = nil
	}
}

// tpmKey is a key that lives in the TPM.
type tpmKey struct {
	crypto.Signer
	name string
}

// openTPM returns the TPM that holds this identity's keys.
func (k *keyring) openTPM(ctx context.Context) (*tpm.TPM, error) {
	if k.tpm != nil {
		return k.tpm, nil
	}
	spec := k.tpmSpec
	if spec == "" {
		b, err := os.ReadFile(filepath.Join(k.dir, tpmInfoFile))
		if err != nil {
			return nil, fmt.Errorf("device.key is a TPM key but %s is unreadable (%v): pass --tpm", tpmInfoFile, err)
		}
		var ti tpmInfo
		if err := json.Unmarshal(b, &ti); err != nil || ti.Spec == "" {
			return nil, fmt.Errorf("%s: no TPM spec (%v): pass --tpm", tpmInfoFile, err)
		}
		spec = ti.Spec
	}
	t, err := tpm.Open(ctx, spec, tpm.Options{StateDir: filepath.Join(k.dir, tpmStateDir), DisableDownload: true})
	if err != nil {
		return nil, err
	}
	k.tpm = t
	return t, nil
}

// useTPM makes t the TPM of this keyring (enrollment opened it) and records
// spec in tpmInfoFile.
func (k *keyring) useTPM(t *tpm.TPM, spec string) error {
	k.tpm = t
	b, err := json.MarshalIndent(tpmInfo{Spec: spec, AK: akName}, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(k.dir, tpmInfoFile), append(b, '\n'), 0o644)
}

// parse turns the content of a key file into a signer.
func (k *keyring) parse(ctx context.Context, data []byte, file string) (crypto.Signer, error) {
	if blk, _ := pem.Decode(data); blk != nil && blk.Type == tpmKeyBlock {
		return k.loadTPMKey(ctx, blk, file)
	}
	pw, err := keyPassword(k.dir, k.passwordPath, false)
	if err != nil {
		return nil, fmt.Errorf("%v", err) // not fs.ErrNotExist: the identity is there
	}
	key, err := pemutil.ParseKey(data, pemutil.WithPassword(pw))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: %T is not a signing key", file, key)
	}
	return signer, nil
}

func (k *keyring) loadTPMKey(ctx context.Context, blk *pem.Block, file string) (crypto.Signer, error) {
	name := blk.Headers["Key-Name"]
	if name == "" {
		return nil, fmt.Errorf("%s: TPM key reference without a Key-Name", file)
	}
	want, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: TPM key reference: %w", file, err)
	}
	t, err := k.openTPM(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	key, err := t.LoadKey(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	signer, err := key.Signer(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (if the TPM was cleared, run enroll again: the same TPM re-attests and keeps its device id)", file, err)
	}
	if pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(want) {
		return nil, fmt.Errorf("%s: the TPM's key %q is not the one referenced (was the TPM cleared?)", file, name)
	}
	return &tpmKey{Signer: signer, name: name}, nil
}

// encode returns what the key file holds for key: a TPM key reference, or
// the key encrypted with the key password (created when missing).
func (k *keyring) encode(key crypto.Signer) ([]byte, error) {
	if tk, ok := key.(*tpmKey); ok {
		der, err := x509.MarshalPKIXPublicKey(tk.Public())
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: tpmKeyBlock, Headers: map[string]string{"Key-Name": tk.name}, Bytes: der}), nil
	}
	pw, err := keyPassword(k.dir, k.passwordPath, true)
	if err != nil {
		return nil, err
	}
	return encodeKey(key, pw)
}

// newKeyLike makes a key stored the way old is: in the TPM for a TPM key,
// else a software P-256 key. A TPM key comes with its certification by the
// AK over nonce (TPM2_Certify), which the CA checks before it certifies a
// new key of a TPM-attested device.
func (k *keyring) newKeyLike(ctx context.Context, old crypto.Signer, nonce []byte) (crypto.Signer, *wire.TPMCertificationParameters, error) {
	if _, ok := old.(*tpmKey); !ok {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, fmt.Errorf("generate device key: %w", err)
		}
		return key, nil, nil
	}
	t, err := k.openTPM(ctx)
	if err != nil {
		return nil, nil, err
	}
	key, tk, err := newTPMKey(ctx, t, nonce)
	if err != nil {
		return nil, nil, err
	}
	cp, err := tk.CertificationParameters(ctx)
	if err != nil {
		return nil, nil, err
	}
	return key, &wire.TPMCertificationParameters{
		Public: cp.Public, CreateData: cp.CreateData,
		CreateAttestation: cp.CreateAttestation, CreateSignature: cp.CreateSignature,
	}, nil
}

// newTPMKey creates a P-256 key in t, certified by the AK over nonce (a
// random one when nil).
func newTPMKey(ctx context.Context, t *tpm.TPM, nonce []byte) (*tpmKey, *tpm.Key, error) {
	if _, err := t.EnsureAK(ctx, akName); err != nil {
		return nil, nil, err
	}
	if nonce == nil {
		nonce = make([]byte, 32)
		if _, err := rand.Read(nonce); err != nil {
			return nil, nil, err
		}
	}
	name, err := newTPMKeyName()
	if err != nil {
		return nil, nil, err
	}
	key, err := t.AttestedKey(ctx, akName, name, nonce)
	if err != nil {
		return nil, nil, err
	}
	s, err := key.Signer(ctx)
	if err != nil {
		return nil, nil, err
	}
	return &tpmKey{Signer: s, name: name}, key, nil
}

func newTPMKeyName() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "device-" + hex.EncodeToString(b[:]), nil
}

// pruneTPMKeys deletes the TPM key blobs that no key file of dir refers to
// (attempts that failed, keys replaced two renewals ago). Best effort: a
// failure is logged, never fatal.
func (k *keyring) pruneTPMKeys(ctx context.Context, logf func(string, ...any)) {
	if k.tpm == nil {
		return
	}
	keep := map[string]bool{}
	for _, f := range []string{keyFile, keyFile + ".next", keyFile + ".prev"} {
		b, err := os.ReadFile(filepath.Join(k.dir, f))
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				logf("not pruning TPM keys: %v", err)
				return
			}
			continue
		}
		if blk, _ := pem.Decode(b); blk != nil && blk.Type == tpmKeyBlock {
			keep[blk.Headers["Key-Name"]] = true
		}
	}
	names, err := k.tpm.KeyNames(ctx)
	if err != nil {
		logf("not pruning TPM keys: %v", err)
		return
	}
	for _, n := range names {
		if !keep[n] {
			if err := k.tpm.DeleteKey(ctx, n); err != nil {
				logf("delete unused TPM key %s: %v", n, err)
			}
		}
	}
}

// keyStorage describes where key lives, for humans.
func keyStorage(key crypto.Signer, spec string) string {
	if tk, ok := key.(*tpmKey); ok {
		return fmt.Sprintf("TPM (%s), key %s", spec, tk.name)
	}
	return "software (encrypted PEM)"
}
