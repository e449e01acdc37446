// Command enroll is the devpki device agent. With no subcommand (or
// "enroll") it gets the device an identity from the CA:
//
//	enroll --ca https://ca.example:8443 --fingerprint <sha256 of root> \
//	    --token-file /boot/devpki.token --dir /var/lib/devpki
//
// It pins the CA root by fingerprint, makes an ECDSA P-256 key, sends a CSR
// naming the device serial and MAC with a bootstrap token, verifies the
// certificate it gets, and writes device.key, device.crt, chain.pem and
// root.crt into --dir. Run again, it does nothing while that identity is
// valid. Transient failures (the network, 429 and 5xx answers such as a
// CA whose registry cannot commit) are retried with jittered exponential
// backoff, honouring Retry-After, for up to --timeout (default 15m). Exit
// codes: 0 enrolled or already enrolled, 1 permanent error (a 4xx answer,
// a wrong CA), 2 usage error, 3 timed out while the CA kept failing
// transiently.
//
// With --idevid-cert and --idevid-key instead of a token, the device
// presents its factory IDevID (IEEE 802.1AR) as its TLS client certificate
// and the CA admits it by the manufacturer CA it chains to; the serial
// defaults to the IDevID's. The new identity's key is still made fresh, in
// the TPM when there is one (no TPM attestation then: the IDevID is the
// proof).
//
// Where the key lives is --tpm (default auto): with a TPM (/dev/tpmrm0,
// /dev/tpm0, a device path, or swtpm:unix:PATH / swtpm:tcp:HOST:PORT) the key
// is created inside it and never leaves it — device.key then only references
// the TPM's wrapped blob in DIR/tpm, and DIR/tpm.json names the TPM. Without
// --token such a device enrolls by TPM attestation (EK certificate or a
// pre-registered EK, credential activation, the key certified over the CA's
// nonce); with a token the same attestation runs and the token picks the
// tenant. --tpm auto on a device without a TPM falls back to a software key
// (encrypted PEM, its password in device.key.password) and says so; a tenant
// with require_tpm refuses that key. --tpm none always uses a software key.
//
// The other subcommands work on an enrolled --dir (the CA URL and pinned
// root are recorded in DIR/ca.json at enrollment):
//
//	enroll renew --dir DIR [--rekey]   renew once over mTLS (re-key when asked or forced)
//	enroll rekey --dir DIR             renew with a new key (in the TPM for a TPM identity)
//	enroll run --dir DIR [enroll flags] enroll if needed, then renew at 2/3 of each lifetime
//	enroll status --dir DIR            identity, key storage, validity, chain and OCSP status
//
// With --protocol est the agent speaks EST (RFC 7030) instead of the devpki
// API, to devpki's /.well-known/est or any EST server: cacerts pinned by
// --fingerprint, simpleenroll with the token (HTTP Basic, user name = the
// serial; or --est-auth bearer), and renewals over simplereenroll (est.go).
//
// Renewal keeps the previous key and certificate as .prev files and installs
// the new ones so that a crash at any point leaves a valid pair (renew.go).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run parses args and runs the chosen subcommand, returning the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	cmd := "enroll"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "enroll":
	case "renew", "rekey", "run", "status":
		return runAgentCmd(ctx, cmd, args, stdout, stderr, getenv)
	default:
		fmt.Fprintf(stderr, "enroll: unknown subcommand %q (want enroll, renew, rekey, run or status)\n", cmd)
		return exitUsage
	}

	cfg, err := parseEnrollFlags(args, stderr, getenv)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err == nil {
		cfg.Stdout, cfg.Stderr = stdout, stderr
		cfg.UserAgent = "devpki-enroll/0"
		err = runEnroll(ctx, cfg)
	}
	if err != nil {
		fmt.Fprintf(stderr, "enroll: %v\n", err)
	}
	return exitCode(err)
}

func parseEnrollFlags(args []string, stderr io.Writer, getenv func(string) string) (config, error) {
	var (
		cfg       config
		token     string
		tokenFile string
	)
	fs := flag.NewFlagSet("enroll", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.CA, "ca", "", "CA base `URL` (https)")
	fs.StringVar(&cfg.Fingerprint, "fingerprint", "", "SHA-256 fingerprint of the CA root, hex (':' allowed)")
	fs.StringVar(&token, "token", "", "bootstrap `token` (prefer --token-file or DEVPKI_TOKEN: flags are visible in ps)")
	fs.StringVar(&tokenFile, "token-file", "", "read the bootstrap token from `file`")
	fs.StringVar(&cfg.Dir, "dir", "", "state `directory` for the key and certificates (created 0700)")
	fs.StringVar(&cfg.Serial, "serial", "", "device serial number (default: from DMI or the device tree)")
	fs.Func("mac", "MAC `address` to claim, repeatable (default: first non-loopback interface)", func(s string) error {
		cfg.MACs = append(cfg.MACs, s)
		return nil
	})
	fs.StringVar(&cfg.KeyPasswordFile, "key-password-file", "", "`file` holding the password of device.key (default: DIR/device.key.password, generated)")
	fs.DurationVar(&cfg.Timeout, "timeout", defaultTimeout, "give up retrying transient failures (network, 429, 500, 502, 503, 504) after this long")
	fs.StringVar(&cfg.IDevIDCert, "idevid-cert", "", "enroll with the device's factory IDevID instead of a token: its certificate `file` (PEM, leaf first, then any intermediates)")
	fs.StringVar(&cfg.IDevIDKey, "idevid-key", "", "the IDevID's private key `file` (PEM, unencrypted); the identity's own key is still made fresh")
	fs.StringVar(&cfg.TPM, "tpm", "auto", "where the key lives, a `spec`: auto (/dev/tpmrm0 or /dev/tpm0; a software key when there is none), a TPM device path, swtpm:unix:PATH, swtpm:tcp:HOST:PORT, or none (software key)")
	protocolFlags(fs, &cfg)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: enroll [enroll] --ca URL --fingerprint HEX [--token T | --token-file F | $DEVPKI_TOKEN | --idevid-cert F --idevid-key F] [--tpm SPEC] --dir DIR [flags]\n")
		fmt.Fprintf(fs.Output(), "       (a token is required unless the device enrolls by TPM attestation or with its factory IDevID)\n")
		fs.PrintDefaults()
		fmt.Fprintf(fs.Output(), "exit codes: 0 ok, 1 permanent error, 2 usage error, 3 timed out on transient errors\n")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, &exitError{exitUsage, err}
	}
	if fs.NArg() > 0 {
		return cfg, usageErr("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	switch {
	case (cfg.IDevIDCert == "") != (cfg.IDevIDKey == ""):
		return cfg, usageErr("give both --idevid-cert and --idevid-key")
	case cfg.IDevIDCert != "" && (token != "" || tokenFile != ""):
		return cfg, usageErr("give a bootstrap token or an IDevID (--idevid-cert), not both")
	case cfg.IDevIDCert != "":
		return cfg, nil
	case token != "" && tokenFile != "":
		return cfg, usageErr("give only one of --token and --token-file")
	case token != "":
		cfg.Token = token
	case tokenFile != "":
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return cfg, usageErr("--token-file: %v", err)
		}
		cfg.Token = strings.TrimSpace(string(b))
		if cfg.Token == "" {
			return cfg, usageErr("--token-file %s is empty", tokenFile)
		}
	default:
		cfg.Token = strings.TrimSpace(getenv("DEVPKI_TOKEN"))
	}
	return cfg, nil
}

// protocolFlags adds --protocol, --est-label and --est-auth (enroll, run).
func protocolFlags(fs *flag.FlagSet, cfg *config) {
	fs.StringVar(&cfg.Protocol, "protocol", protocolNative, "`protocol` of the enrollment: native (the devpki API) or est (RFC 7030, devpki's or any EST server; renewals follow it)")
	fs.StringVar(&cfg.ESTLabel, "est-label", "", "EST `label`: the /.well-known/est/<label>/ segment (for devpki, a tenant); none by default")
	fs.StringVar(&cfg.ESTAuth, "est-auth", "basic", "how simpleenroll sends the token: basic (HTTP Basic, user name = the serial) or bearer")
}

// runAgentCmd runs renew, rekey (renew --rekey), run and status.
func runAgentCmd(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	name := cmd
	if cmd == "rekey" {
		name = "renew"
	}
	a, err := parseAgentFlags(name, args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err == nil {
		a.cfg.Stdout, a.cfg.Stderr = stdout, stderr
		a.cfg.UserAgent = "devpki-enroll/0"
		a.cfg.Now, err = envClock(getenv)
		warnClock(&a.cfg, getenv)
	}
	if err == nil {
		if a.cfg.Token == "" {
			a.cfg.Token = strings.TrimSpace(getenv("DEVPKI_TOKEN"))
		}
		fp := envFailpoint(getenv)
		switch cmd {
		case "renew":
			err = runRenewCmd(ctx, a, fp)
		case "rekey":
			a.rekey = true
			err = runRenewCmd(ctx, a, fp)
		case "run":
			err = runAgent(ctx, a, fp)
		case "status":
			err = runStatus(ctx, a)
		}
	}
	switch {
	case err != nil && a != nil && a.cfg.Log != nil:
		a.cfg.Log.Error("enroll "+cmd+" failed", "err", err.Error(), "exit_code", exitCode(err))
	case err != nil:
		fmt.Fprintf(stderr, "enroll %s: %v\n", cmd, err)
	}
	return exitCode(err)
}
