// Package tpm is the device side of TPM-backed identity: it opens a TPM 2.0
// (a kernel device, swtpm's socket or, in tpmsimulator builds, an in-process
// simulator), reads the endorsement key (EK), keeps an attestation key (AK)
// and creates ECDSA P-256 application keys that never leave the TPM,
// certified by the AK over a server nonce (TPM2_Certify) and usable as a
// crypto.Signer for a CSR and for mutual TLS.
//
// It wraps go.step.sm/crypto/tpm, which drives go-attestation. Key blobs are
// stored in Options.StateDir, one JSON file per object (ak-NAME.tpmobj,
// key-NAME.tpmobj, the layout of step's storage.Dirstore), in a 0700
// directory with 0600 files written atomically. The blobs are wrapped by the
// TPM's storage root key: useless on another TPM, and gone for good after a
// TPM2_Clear (the device must then enroll again).
//
// # Dictionary-attack lockout
//
// Application keys have an empty authValue and are DA-protected (the
// template of go-attestation sets no noDA; the AK has noDA). When the TPM is
// in DA lockout, Sign fails with a TPM warning ("lockout") until the TPM's
// recovery time has passed or someone with the lockout authorization runs
// TPM2_DictionaryAttackLockReset. The DA counter rises with wrong passwords
// on any DA-protected object, and on TPMs (swtpm included) after every
// power loss without TPM2_Shutdown. Errors from Sign in lockout wrap
// ErrLockout. On a test TPM with an empty lockout authorization,
// (*TPM).ResetLockout clears the counter.
//
// # Access
//
// /dev/tpmrm0 (the kernel resource manager) is the device to use; the agent
// needs group tss or root. /dev/tpm0 has no resource manager and admits one
// open at a time. go-attestation persists the SRK at 0x81000001 and the RSA
// EK at 0x81010001 with empty owner and endorsement authorization.
//
// # Tests
//
//	go test ./pkg/tpm/                        # unit tests; swtpm tests if swtpm is installed
//	DEVPKI_REQUIRE_SWTPM=1 go test ./pkg/tpm/ # swtpm tests fail instead of skipping (test/run.sh)
//	go test -tags tpmsimulator ./pkg/tpm/     # adds the simulator tests (cgo, gcc, libssl-dev)
//	go test -tags tpmsimulator -run '^$' -bench . ./pkg/tpm/
//
// The swtpm tests start a fresh swtpm per test (swtpm_setup --create-ek-cert)
// and stop it with TPM2_Shutdown first, so the DA counter stays at 0.
package tpm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"

	steptpm "go.step.sm/crypto/tpm"

	"devpki/pkg/tpm/internal/swtpmconn"
)

// Errors returned by this package; match them with errors.Is.
var (
	// ErrNoTPM means spec "auto" found neither /dev/tpmrm0 nor /dev/tpm0.
	ErrNoTPM = errors.New("no TPM found (tried /dev/tpmrm0 and /dev/tpm0)")
	// ErrUnsupported is returned for a spec this build cannot open.
	ErrUnsupported = errors.New("not supported")
	// ErrBadName is returned for an AK or key name outside [a-z0-9-].
	ErrBadName = errors.New("invalid name")
	// ErrNotFound is returned when an AK or key is not in the state directory.
	ErrNotFound = errors.New("not found")
	// ErrExists is returned when creating a key whose name is taken.
	ErrExists = errors.New("already exists")
	// ErrBadNonce is returned for an empty or oversized qualifying nonce.
	ErrBadNonce = errors.New("invalid nonce")
	// ErrLockout wraps TPM errors caused by dictionary-attack lockout.
	ErrLockout = errors.New("TPM is in dictionary-attack lockout")
)

// MaxNonceSize is the largest nonce AttestedKey accepts. The TPM bounds
// qualifyingData by the size of its largest digest (TPMT_HA): 64 bytes fits a
// TPM with SHA-512, but use 32 bytes (or SHA-256 of a longer value) to work
// on every TPM.
const MaxNonceSize = 64

// Options configures Open. The zero value is not usable: StateDir is
// required.
type Options struct {
	// StateDir is where AK and key blobs persist. It is created with mode
	// 0700 if missing; files in it are written with mode 0600.
	StateDir string
	// DisableDownload stops go-attestation from fetching a missing EK
	// certificate from the manufacturer (Intel, AMD) over HTTP. Device specs
	// ("auto" or a path) always disable it, whatever this says: a device
	// makes no network requests behind its operator's back. swtpm and the
	// simulator never need a download.
	DisableDownload bool
}

// TPM is an open TPM with its state directory. It is safe for concurrent
// use: operations are serialised inside the TPM library.
type TPM struct {
	spec    string
	tpm     *steptpm.TPM
	closer  io.Closer // the simulator, or nil
	rawOpen func() (io.ReadWriteCloser, error)

	closeOnce sync.Once
	closeErr  error
}

// Open opens the TPM named by spec:
//
//	auto                 /dev/tpmrm0, else /dev/tpm0, else ErrNoTPM
//	/dev/tpmrm0          a TPM character device (any path)
//	swtpm:unix:PATH      swtpm started with --server type=unixio,path=PATH
//	swtpm:tcp:HOST:PORT  swtpm started with --server type=tcp,port=PORT (its raw
//	                     protocol, not the MS-simulator one go-tpm's mssim
//	                     speaks)
//	simulator            the in-process simulator (tpmsimulator builds only)
//	simulator:SEED       the same with a fixed 16-hex-digit seed, so that keys
//	                     survive a new Open; insecure, for tests only
//
// Open checks that the TPM answers before returning. Close releases it.
func Open(ctx context.Context, spec string, opts Options) (*TPM, error) {
	if opts.StateDir == "" {
		return nil, errors.New("open TPM: Options.StateDir is required")
	}
	var stepOpts []steptpm.NewTPMOption
	t := &TPM{spec: spec}

	switch {
	case spec == "auto":
		path, err := findDevice()
		if err != nil {
			return nil, fmt.Errorf("open TPM %q: %w", spec, err)
		}
		stepOpts = append(stepOpts, deviceOptions(path)...)
		t.rawOpen = func() (io.ReadWriteCloser, error) { return openDevice(path) }
	case strings.HasPrefix(spec, "swtpm:unix:"):
		path := strings.TrimPrefix(spec, "swtpm:unix:")
		if fi, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("open TPM %q: %w", spec, err)
		} else if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("open TPM %q: %s is not a unix socket", spec, path)
		}
		stepOpts = append(stepOpts, steptpm.WithDeviceName(path))
		if opts.DisableDownload {
			stepOpts = append(stepOpts, steptpm.WithDisableDownload())
		}
		t.rawOpen = func() (io.ReadWriteCloser, error) { return openUnix(path) }
	case strings.HasPrefix(spec, "swtpm:tcp:"):
		addr := strings.TrimPrefix(spec, "swtpm:tcp:")
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("open TPM %q: want swtpm:tcp:HOST:PORT: %w", spec, err)
		}
		open := func() (io.ReadWriteCloser, error) { return &swtpmconn.Conn{Addr: addr}, nil }
		// Every call this package makes goes through go-attestation and so
		// the channel; the device name only makes step's go-tpm path (unused
		// here) fail instead of opening /dev/tpmrm0.
		stepOpts = append(stepOpts, steptpm.WithCommandChannel(&channel{open: open}), steptpm.WithDeviceName(spec))
		if opts.DisableDownload {
			stepOpts = append(stepOpts, steptpm.WithDisableDownload())
		}
		t.rawOpen = open
	case spec == "simulator" || strings.HasPrefix(spec, "simulator:"):
		sim, err := openSimulator(strings.TrimPrefix(strings.TrimPrefix(spec, "simulator"), ":"))
		if err != nil {
			return nil, fmt.Errorf("open TPM %q: %w", spec, err)
		}
		t.closer = sim
		stepOpts = append(stepOpts, steptpm.WithSimulator(sim))
		if opts.DisableDownload {
			stepOpts = append(stepOpts, steptpm.WithDisableDownload())
		}
		t.rawOpen = func() (io.ReadWriteCloser, error) { return nopCloser{sim}, nil }
	case strings.HasPrefix(spec, "/"):
		if _, err := os.Stat(spec); err != nil {
			return nil, fmt.Errorf("open TPM %q: %w", spec, err)
		}
		stepOpts = append(stepOpts, deviceOptions(spec)...)
		t.rawOpen = func() (io.ReadWriteCloser, error) { return openDevice(spec) }
	default:
		return nil, fmt.Errorf("open TPM %q: unknown spec (want auto, a device path, swtpm:unix:PATH or simulator)", spec)
	}

	// The state directory is created only once a TPM was found.
	store, err := newFileStore(opts.StateDir)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("open TPM %q: %w", spec, err)
	}
	stepOpts = append(stepOpts, steptpm.WithStore(store))
	st, err := steptpm.New(stepOpts...)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("open TPM %q: %w", spec, err)
	}
	t.tpm = st
	if _, err := st.Info(ctx); err != nil {
		t.Close()
		return nil, fmt.Errorf("open TPM %q: %w", spec, err)
	}
	return t, nil
}

// Spec returns the spec the TPM was opened with.
func (t *TPM) Spec() string { return t.spec }

// Close releases the TPM. For the simulator it ends the simulator (its state
// is lost unless it was seeded). Close is idempotent.
func (t *TPM) Close() error {
	t.closeOnce.Do(func() {
		if t.closer != nil {
			t.closeErr = t.closer.Close()
		}
	})
	return t.closeErr
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// checkName enforces the names that become file names in the state
// directory: 1 to 63 characters of [a-z0-9-], not starting with '-'.
func checkName(kind, name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%s name %q: %w (want 1-63 characters of [a-z0-9-], not starting with '-')", kind, name, ErrBadName)
	}
	return nil
}

func findDevice() (string, error) {
	for _, p := range []string{"/dev/tpmrm0", "/dev/tpm0"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", ErrNoTPM
}

// deviceOptions makes both of step's code paths use path: go-tpm honours
// WithDeviceName, go-attestation only a command channel (its own discovery
// probes /sys/class/tpm, which containers often hide).
func deviceOptions(path string) []steptpm.NewTPMOption {
	return []steptpm.NewTPMOption{
		steptpm.WithDeviceName(path),
		steptpm.WithCommandChannel(&channel{open: func() (io.ReadWriteCloser, error) { return openDevice(path) }}),
		steptpm.WithDisableDownload(),
	}
}

type nopCloser struct{ io.ReadWriter }

func (nopCloser) Close() error { return nil }
