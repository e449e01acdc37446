package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"go.step.sm/crypto/kms"
	kmsapi "go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/kms/uri"
)

// Errors of the key backends (OpenSigner, CreateCA with a KMS). Each is
// wrapped with what was asked and what to do about it.
var (
	// ErrKMS is wrapped when a PKCS#11 module or token cannot be used:
	// the module does not load, the token is not there, the URI is bad.
	ErrKMS = errors.New("key store unavailable")
	// ErrWrongPIN is wrapped when the token refuses the PIN.
	ErrWrongPIN = errors.New("wrong PIN")
	// ErrKeyNotFound is wrapped when the token has no key with the
	// URI's id and object.
	ErrKeyNotFound = errors.New("key not found")
	// ErrUnsupportedCAKey is wrapped when a CA key is of a type devpki does
	// not issue with: only ECDSA P-256 and P-384 and RSA 2048 to 8192 bits
	// (exponent 65537) are accepted.
	ErrUnsupportedCAKey = errors.New("unsupported CA key type")
)

// PKCS11Scheme is the scheme of RFC 7512 PKCS#11 URIs as go.step.sm/crypto/kms/pkcs11
// reads them: "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=devpki;id=01;object=ca?pin-source=/etc/devpki/pin".
const PKCS11Scheme = "pkcs11"

// IsPKCS11 reports whether keyURI names a key in a PKCS#11 token.
func IsPKCS11(keyURI string) bool {
	i := strings.IndexByte(keyURI, ':')
	return i > 0 && strings.EqualFold(keyURI[:i], PKCS11Scheme)
}

// pinValue matches the PIN in a PKCS#11 URI so that it never reaches an
// error message or a log.
var pinValue = regexp.MustCompile(`(?i)(pin-value=)[^;&?]*`)

// RedactKeyURI returns keyURI with any pin-value replaced by "REDACTED": the
// form to print.
func RedactKeyURI(keyURI string) string {
	return pinValue.ReplaceAllString(keyURI, "${1}REDACTED")
}

// redactErr is a library error's text with any PIN in a URI it quotes redacted.
func redactErr(err error) string { return RedactKeyURI(err.Error()) }

// OpenSigner turns a key reference into a crypto.Signer: a PEM file path or
// "softkms:path=FILE" (decrypted with password; nil for a plain key), or a
// "pkcs11:…" URI naming a token (module-path, token, serial or slot-id;
// pin-value or pin-source) and a key in it (id and/or object). The closer
// releases the token's sessions: the signer must not be used after it.
// Every failure names the key (its PIN redacted) and wraps ErrWrongPassword,
// ErrKMS, ErrWrongPIN, ErrKeyNotFound or ErrUnsupportedCAKey where one fits.
func OpenSigner(ctx context.Context, keyURI string, password []byte) (crypto.Signer, io.Closer, error) {
	if keyURI == "" {
		return nil, nil, errors.New("key URI is required")
	}
	if IsPKCS11(keyURI) {
		km, err := openPKCS11(ctx, keyURI)
		if err != nil {
			return nil, nil, err
		}
		signer, err := pkcs11Signer(km, keyURI)
		if err != nil {
			km.Close()
			return nil, nil, err
		}
		return signer, km, nil
	}
	kopts := kmsapi.Options{Type: kmsapi.SoftKMS}
	if i := strings.IndexByte(keyURI, ':'); i > 0 && !strings.EqualFold(keyURI[:i], "softkms") && !filepath.IsAbs(keyURI) {
		typ, err := kmsapi.TypeOf(keyURI)
		if err != nil {
			return nil, nil, fmt.Errorf("key URI %q: %s", RedactKeyURI(keyURI), redactErr(err))
		}
		kopts = kmsapi.Options{Type: typ, URI: keyURI}
	}
	km, err := kms.New(ctx, kopts)
	if err != nil {
		return nil, nil, fmt.Errorf("key URI %q: %s", RedactKeyURI(keyURI), redactErr(err))
	}
	signer, err := km.CreateSigner(&kmsapi.CreateSignerRequest{SigningKey: keyURI, Password: password})
	if err != nil {
		km.Close()
		if errors.Is(err, x509.IncorrectPasswordError) {
			return nil, nil, fmt.Errorf("key %q: %w", keyURI, ErrWrongPassword)
		}
		if len(password) == 0 && strings.Contains(err.Error(), "password") {
			return nil, nil, fmt.Errorf("key %q is encrypted and no password was given: %w", keyURI, ErrWrongPassword)
		}
		return nil, nil, fmt.Errorf("key %q: %w", keyURI, err)
	}
	return signer, km, nil
}

// openPKCS11 checks what can be checked before the module is loaded (the
// URI, the module file, the PIN file), then logs in to the token.
func openPKCS11(ctx context.Context, rawURI string) (kmsapi.KeyManager, error) {
	shown := RedactKeyURI(rawURI)
	u, err := uri.ParseWithScheme(PKCS11Scheme, rawURI)
	if err != nil {
		return nil, fmt.Errorf("PKCS#11 URI %q: %w: %s", shown, ErrKMS, redactErr(err))
	}
	token := u.Get("token")
	sel := 0
	for _, k := range []string{"token", "serial", "slot-id"} {
		if u.Get(k) != "" {
			sel++
		}
	}
	if sel != 1 {
		return nil, fmt.Errorf("PKCS#11 URI %q: %w: name the token with exactly one of token=LABEL, serial= or slot-id=", shown, ErrKMS)
	}
	module := u.Get("module-path")
	if module == "" {
		return nil, fmt.Errorf("PKCS#11 URI %q: %w: module-path= is required (the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so)", shown, ErrKMS)
	}
	if strings.ContainsRune(module, '/') {
		if _, err := os.Stat(module); err != nil {
			return nil, fmt.Errorf("PKCS#11 module %s: %w: %w (install the token's PKCS#11 library, e.g. 'apt install softhsm2', or fix module-path)", module, ErrKMS, err)
		}
	}
	if !u.Has("pin-value") && !u.Has("pin-source") {
		// A CA key is a private object: no token shows it without a login,
		// and a server cannot prompt.
		return nil, fmt.Errorf("PKCS#11 URI %q: %w: no PIN; add pin-source=FILE (a file holding the user PIN, mode 0600) or pin-value=PIN (after a '?' or ';')", shown, ErrWrongPIN)
	}
	if u.Has("pin-value") && u.Has("pin-source") {
		return nil, fmt.Errorf("PKCS#11 URI %q: %w: give pin-value or pin-source, not both", shown, ErrKMS)
	}
	if src := u.Get("pin-source"); src != "" {
		// go.step.sm/crypto reads pin-source itself but, when it cannot,
		// logs in with an empty PIN: say what is wrong with the file here.
		p := pinSourcePath(src)
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("PKCS#11 pin-source: %w: %w", ErrKMS, err)
		}
		if len(bytes.TrimSpace(b)) == 0 {
			return nil, fmt.Errorf("PKCS#11 pin-source %s is empty: %w", p, ErrWrongPIN)
		}
	}
	km, err := kms.New(ctx, kmsapi.Options{Type: kmsapi.PKCS11, URI: rawURI})
	if err != nil {
		return nil, pkcs11Error(err, module, token, shown)
	}
	return km, nil
}

// pinSourcePath is the file a pin-source names: a path or a file: URL.
func pinSourcePath(src string) string {
	if pu, err := url.Parse(src); err == nil && pu.Scheme == "file" {
		if pu.Path != "" {
			return pu.Path
		}
		return pu.Opaque
	}
	return src
}

// pkcs11Error says in the operator's terms what the module answered.
func pkcs11Error(err error, module, token, shown string) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "unsupported kms type") || strings.Contains(msg, "without cgo"):
		return fmt.Errorf("PKCS#11: %w: this program was built without PKCS#11 support (build it with CGO_ENABLED=1): %s", ErrKMS, redactErr(err))
	case strings.Contains(msg, "failed to open module"):
		return fmt.Errorf("PKCS#11 module %s: %w: it does not load as a PKCS#11 library (check module-path)", module, ErrKMS)
	case strings.Contains(msg, "failed to initialize module"):
		return fmt.Errorf("PKCS#11 module %s: %w: it failed to initialize (%v); for SoftHSM2 check that $SOFTHSM2_CONF (default /etc/softhsm/softhsm2.conf) is readable and names an existing tokendir",
			module, ErrKMS, redactErr(err))
	case strings.Contains(msg, "could not find PKCS#11 token"):
		return fmt.Errorf("PKCS#11 URI %q: %w: module %s has no such token (%q); list its tokens with 'softhsm2-util --show-slots' or 'pkcs11-tool --module %s --list-slots'",
			shown, ErrKMS, module, token, module)
	case strings.Contains(msg, "CKR_PIN_INCORRECT"), strings.Contains(msg, "CKR_PIN_LEN_RANGE"), strings.Contains(msg, "CKR_ARGUMENTS_BAD") && strings.Contains(msg, "log"):
		return fmt.Errorf("PKCS#11 token %q: %w: the token refused the PIN (check pin-value or the pin-source file; tokens lock after a few wrong PINs)", token, ErrWrongPIN)
	case strings.Contains(msg, "CKR_USER_NOT_LOGGED_IN"):
		return fmt.Errorf("PKCS#11 token %q: %w: not logged in (check pin-value or the pin-source file)", token, ErrWrongPIN)
	case strings.Contains(msg, "CKR_PIN_LOCKED"):
		return fmt.Errorf("PKCS#11 token %q: %w: the user PIN is locked; the token's security officer must unlock it", token, ErrWrongPIN)
	}
	return fmt.Errorf("PKCS#11 URI %q: %w: %s", shown, ErrKMS, redactErr(err))
}

// pkcs11Signer finds the key keyURI names and checks it is a CA key devpki
// signs with.
func pkcs11Signer(km kmsapi.KeyManager, keyURI string) (crypto.Signer, error) {
	shown := RedactKeyURI(keyURI)
	u, err := uri.ParseWithScheme(PKCS11Scheme, keyURI)
	if err != nil {
		return nil, fmt.Errorf("PKCS#11 key %q: %s", shown, redactErr(err))
	}
	if u.Get("id") == "" && u.Get("object") == "" {
		return nil, fmt.Errorf("PKCS#11 key %q: %w: name the key with id= and/or object=", shown, ErrKeyNotFound)
	}
	signer, err := km.CreateSigner(&kmsapi.CreateSignerRequest{SigningKey: keyURI})
	if err != nil {
		var nf kmsapi.NotFoundError
		if errors.As(err, &nf) || strings.Contains(err.Error(), "not found") {
			return nil, fmt.Errorf("PKCS#11 key %q: %w in token %q (check id= and object=; 'pkcs11-tool --list-objects' lists them)",
				shown, ErrKeyNotFound, u.Get("token"))
		}
		return nil, fmt.Errorf("PKCS#11 key %q: %w: %s", shown, ErrKMS, redactErr(err))
	}
	if err := CheckCAKey(signer.Public()); err != nil {
		return nil, fmt.Errorf("PKCS#11 key %q: %w", shown, err)
	}
	return signer, nil
}

// CheckCAKey returns nil for the CA key types devpki issues with (ECDSA
// P-256 and P-384, RSA 2048 to 8192 bits with exponent 65537) and an error
// wrapping ErrUnsupportedCAKey for any other.
func CheckCAKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return fmt.Errorf("%w: ECDSA %s (use P-256 or P-384)", ErrUnsupportedCAKey, k.Curve.Params().Name)
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < MinRSABits || bits > MaxRSABits || k.E != rsaExponent {
			return fmt.Errorf("%w: RSA %d bits, exponent %d (use %d to %d bits, exponent %d)",
				ErrUnsupportedCAKey, bits, k.E, MinRSABits, MaxRSABits, rsaExponent)
		}
		return nil
	}
	return fmt.Errorf("%w: %T (use ECDSA P-256 or P-384, or RSA)", ErrUnsupportedCAKey, pub)
}

// pkcs11KeyURI is the URI of a key in the token of tokenURI: the token's
// attributes (module, token, PIN) and the key's id and object, so that one
// ca.key value says everything 'ca serve' needs.
func pkcs11KeyURI(tokenURI string, id []byte, object string) (string, error) {
	u, err := uri.ParseWithScheme(PKCS11Scheme, tokenURI)
	if err != nil {
		return "", err
	}
	var path []string
	for _, k := range []string{"module-path", "token", "serial", "slot-id", "max-sessions"} {
		if v := u.Get(k); v != "" {
			path = append(path, k+"="+uriEscape(v))
		}
	}
	if len(id) > 0 {
		path = append(path, "id="+hex.EncodeToString(id))
	}
	if object != "" {
		path = append(path, "object="+uriEscape(object))
	}
	s := PKCS11Scheme + ":" + strings.Join(path, ";")
	// RFC 7512 puts the PIN attributes in the query.
	switch {
	case u.Get("pin-source") != "":
		// 'ca serve' may run elsewhere than 'ca init' did.
		src := pinSourcePath(u.Get("pin-source"))
		if abs, err := filepath.Abs(src); err == nil {
			src = abs
		}
		s += "?pin-source=" + uriEscape(src)
	case u.Get("pin-value") != "":
		s += "?pin-value=" + uriEscape(u.Get("pin-value"))
	}
	return s, nil
}

// uriEscape percent-encodes a PKCS#11 URI attribute value, keeping "/" so
// that module paths stay readable.
func uriEscape(v string) string {
	return strings.ReplaceAll(url.QueryEscape(v), "%2F", "/")
}

// keyInToken names the key a new CA key gets in a token: a random CKA_ID
// and the label devpki-<role>-<id>, so that one token may hold the keys of
// several CAs (or of a rollover) without a clash.
func keyInToken(role string) ([]byte, string, error) {
	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		return nil, "", err
	}
	return id, "devpki-" + role + "-" + hex.EncodeToString(id), nil
}

// tokenKeys is the key manager CreateCA makes its token keys through: it
// records the keys it made (so that a failure deletes them) and answers
// CreateKey for CAOptions.IntermediateKey with that existing key.
type tokenKeys struct {
	km                kmsapi.KeyManager
	rootURI, interURI string
	existing          string // interURI when it names a key given to CreateCA
	created           []string
}

// openTokenKeys names the keys CreateCA will use in the token of opts.KMS,
// logs in, and checks that an existing key is there and usable.
func openTokenKeys(ctx context.Context, opts CAOptions) (*tokenKeys, error) {
	shown := RedactKeyURI(opts.KMS)
	u, err := uri.ParseWithScheme(PKCS11Scheme, opts.KMS)
	if err != nil {
		return nil, fmt.Errorf("PKCS#11 URI %q: %w: %s", shown, ErrKMS, redactErr(err))
	}
	if u.Get("id") != "" || u.Get("object") != "" {
		return nil, fmt.Errorf("PKCS#11 URI %q names a key: it should name only the token (module-path, token, PIN); name an existing key separately (ca init --kms-key)", shown)
	}
	t := &tokenKeys{}
	if opts.IntermediateKey != "" {
		ku, err := uri.ParseWithScheme(PKCS11Scheme, opts.IntermediateKey)
		if err != nil {
			return nil, fmt.Errorf("PKCS#11 key %q: %s", RedactKeyURI(opts.IntermediateKey), redactErr(err))
		}
		id, object := ku.GetEncoded("id"), ku.Get("object")
		if len(id) == 0 && object == "" {
			return nil, fmt.Errorf("PKCS#11 key %q: %w: name the key with id= and/or object=", RedactKeyURI(opts.IntermediateKey), ErrKeyNotFound)
		}
		for _, k := range []string{"module-path", "token", "serial", "slot-id"} {
			if v := ku.Get(k); v != "" && v != u.Get(k) {
				return nil, fmt.Errorf("PKCS#11 key %q: its %s %q is not the token URI's %q (give the key's id and object only)",
					RedactKeyURI(opts.IntermediateKey), k, v, u.Get(k))
			}
		}
		if t.interURI, err = pkcs11KeyURI(opts.KMS, id, object); err != nil {
			return nil, err
		}
		t.existing = t.interURI
	} else {
		id, object, err := keyInToken("intermediate")
		if err != nil {
			return nil, err
		}
		if t.interURI, err = pkcs11KeyURI(opts.KMS, id, object); err != nil {
			return nil, err
		}
	}
	if opts.RootInKMS {
		id, object, err := keyInToken("root")
		if err != nil {
			return nil, err
		}
		if t.rootURI, err = pkcs11KeyURI(opts.KMS, id, object); err != nil {
			return nil, err
		}
	}
	if t.km, err = openPKCS11(ctx, opts.KMS); err != nil {
		return nil, err
	}
	if t.existing != "" {
		if _, err := pkcs11Signer(t.km, t.existing); err != nil {
			t.km.Close()
			return nil, err
		}
	}
	return t, nil
}

func (t *tokenKeys) GetPublicKey(req *kmsapi.GetPublicKeyRequest) (crypto.PublicKey, error) {
	return t.km.GetPublicKey(req)
}

func (t *tokenKeys) CreateKey(req *kmsapi.CreateKeyRequest) (*kmsapi.CreateKeyResponse, error) {
	if t.existing != "" && req.Name == t.existing {
		s, err := pkcs11Signer(t.km, t.existing)
		if err != nil {
			return nil, err
		}
		return &kmsapi.CreateKeyResponse{Name: t.existing, PublicKey: s.Public(),
			CreateSignerRequest: kmsapi.CreateSignerRequest{SigningKey: t.existing}}, nil
	}
	resp, err := t.km.CreateKey(req)
	if err != nil {
		return nil, fmt.Errorf("make key %q in the token: %w: %s", RedactKeyURI(req.Name), ErrKMS, redactErr(err))
	}
	t.created = append(t.created, req.Name)
	return resp, nil
}

func (t *tokenKeys) CreateSigner(req *kmsapi.CreateSignerRequest) (crypto.Signer, error) {
	return t.km.CreateSigner(req)
}

func (t *tokenKeys) Close() error { return t.km.Close() }

// discard deletes the keys made so far and logs out.
func (t *tokenKeys) discard() {
	if d, ok := t.km.(keyDeleter); ok {
		for _, k := range t.created {
			_ = d.DeleteKey(k)
		}
	}
	t.created = nil
	t.km.Close()
}
