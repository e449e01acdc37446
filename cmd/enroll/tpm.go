package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"devpki/api/client"
	"devpki/api/client/tpmenroll"
	"devpki/api/wire"
	"devpki/pkg/tpm"
)

// Problem slugs the agent reacts to (api/client defines the CA's full set).
const (
	slugTPMRequired = "tpm-required"
	slugTPMDisabled = wire.SlugTPMDisabled
)

// openEnrollTPM opens the TPM named by --tpm for a new enrollment. It returns
// nil for --tpm none, and for --tpm auto on a device without a TPM (the
// software fallback, announced on stderr). Any other failure to open a TPM is
// an error: a device that has a TPM never silently falls back.
func (c *config) openEnrollTPM(ctx context.Context) (*tpm.TPM, error) {
	if c.TPM == "none" {
		return nil, nil
	}
	t, err := tpm.Open(ctx, c.TPM, tpm.Options{StateDir: filepath.Join(c.Dir, tpmStateDir), DisableDownload: true})
	switch {
	case err == nil:
		return t, nil
	case c.TPM == "auto" && errors.Is(err, tpm.ErrNoTPM):
		// A device that enrolled with a TPM does not quietly become a
		// software device because its TPM went missing.
		if b, rerr := os.ReadFile(filepath.Join(c.Dir, tpmInfoFile)); rerr == nil {
			return nil, fmt.Errorf("%w, but this device enrolled with a TPM (%s: %s): refusing to fall back to a software key; "+
				"bring the TPM back (driver, /dev/tpmrm0 permissions), or pass --tpm none to enroll with a software key on purpose",
				err, tpmInfoFile, strings.TrimSpace(string(b)))
		}
		c.logf("no TPM found (tried /dev/tpmrm0 and /dev/tpm0): using a software key; a tenant with require_tpm will refuse it")
		return nil, nil
	case errors.Is(err, os.ErrPermission):
		return nil, usageErr("--tpm %s: %v (run as root or in group tss)", c.TPM, err)
	case errors.Is(err, os.ErrNotExist):
		return nil, usageErr("--tpm %s: %v (is the TPM driver loaded, or swtpm running?)", c.TPM, err)
	}
	return nil, fmt.Errorf("--tpm %s: %w (use --tpm none for a software key)", c.TPM, err)
}

// enrollTPM enrolls with a key created in t. Without a bootstrap token the CA
// admits the device on its TPM alone (attestation: EK certificate or a
// pre-registered EK, credential activation, certification of the key over
// the CA's nonce); with a token the same attestation proves the key is
// TPM-resident and the token decides the tenant. Each attempt is a whole
// round with a fresh challenge and a fresh key: a lost answer is retried by
// attesting again, which the CA accepts for the same serial and EK.
func enrollTPM(ctx context.Context, cfg *config, r *retrier, cl *client.Client, t *tpm.TPM, serial string, macs []string, root *x509.Certificate) (*identity, string, error) {
	cfg.logf("TPM %s: reading the EK and the attestation key (the first run creates the key: seconds on a hardware TPM)", cfg.TPM)
	claim, err := tpmenroll.Claim(ctx, t, akName, serial, macs)
	if err != nil && strings.Contains(err.Error(), "integrity check failed") {
		// TPM_RC_INTEGRITY: the AK blob was wrapped by a storage key this
		// TPM no longer has (a TPM2_Clear). The EK is unchanged, so a new
		// AK attests the same TPM and the CA keeps the device id.
		cfg.logf("the attestation key in %s no longer loads (%v): the TPM was cleared; making a new one",
			filepath.Join(cfg.Dir, tpmStateDir), err)
		dropAK(ctx, cfg, t)
		claim, err = tpmenroll.Claim(ctx, t, akName, serial, macs)
	}
	if err != nil {
		return nil, "", tpmHint(fmt.Errorf("TPM: %w", err))
	}
	if len(claim.EKCert) == 0 {
		cfg.logf("the TPM holds no EK certificate: the CA admits it only if an operator pre-registered its EK (ca devices preregister --ek-pub)")
	}
	what := "enroll by TPM attestation"
	if cfg.Token != "" {
		what = "enroll by TPM attestation with a bootstrap token"
	}
	cfg.logf("%s: serial %s", what, serial)
	var (
		resp *wire.EnrollResponse
		ans  *tpmenroll.Answered
	)
	round := func(ctx context.Context) error {
		var ch *wire.TPMChallengeResponse
		var err error
		if cfg.Token != "" {
			ch, err = cl.TPMChallengeWithToken(ctx, cfg.Token, claim)
		} else {
			ch, err = cl.TPMChallenge(ctx, claim)
		}
		if err != nil {
			return err
		}
		name, err := newTPMKeyName()
		if err != nil {
			return err
		}
		if ans, err = tpmenroll.Answer(ctx, t, akName, name, ch, serial, macs); err != nil {
			return tpmHint(fmt.Errorf("TPM: %w", err))
		}
		resp, err = cl.TPMEnroll(ctx, ans.Request)
		return err
	}
	err = r.do(ctx, what, func(ctx context.Context) error {
		err := round(ctx)
		// A challenge that expired while the TPM worked (a slow TPM, a
		// stalled link) is not the device's fault: start a new round.
		for i := 0; i < 2 && hasSlug(err, wire.SlugChallengeExpired); i++ {
			cfg.logf("the challenge expired before the answer arrived; starting a new one")
			err = round(ctx)
		}
		return err
	})
	if err != nil && cfg.Token != "" && hasSlug(err, slugTPMDisabled) {
		// The CA does not verify TPMs: the token admits the device, and the
		// key still never leaves the TPM.
		cfg.logf("the CA does not verify TPM attestation (%v); enrolling with the token and a TPM key the CA cannot check", describe(err))
		return enrollTokenTPM(ctx, cfg, r, cl, t, serial, macs, root)
	}
	if err != nil && hasSlug(err, slugTPMDisabled) {
		return nil, "", fmt.Errorf("%w; this CA does not accept TPM attestation: enroll with a bootstrap token (--token-file), or have the operator enable it (tpm in ca.yaml)", err)
	}
	if err != nil {
		return nil, "", err
	}
	key := &tpmKey{Signer: ans.Signer, name: ans.Key.Name()}
	id, err := checkReply(resp, key, []*x509.Certificate{root}, cfg.Now())
	if err != nil {
		return nil, "", fmt.Errorf("CA reply refused: %w", err)
	}
	return id, resp.DeviceID, nil
}

// dropAK deletes the AK and the keys it attested: after a TPM2_Clear none
// of their blobs loads again.
func dropAK(ctx context.Context, cfg *config, t *tpm.TPM) {
	names, err := t.KeyNames(ctx)
	if err != nil {
		cfg.logf("list TPM keys: %v", err)
	}
	for _, n := range names {
		if k, err := t.LoadKey(ctx, n); err == nil && k.AttestedBy() == akName {
			if err := t.DeleteKey(ctx, n); err != nil {
				cfg.logf("delete TPM key %s: %v", n, err)
			}
		}
	}
	if err := t.DeleteAK(ctx, akName); err != nil {
		cfg.logf("delete the old attestation key: %v", err)
	}
}

// enrollTokenTPM is token enrollment with a TPM-resident key and no
// attestation.
func enrollTokenTPM(ctx context.Context, cfg *config, r *retrier, cl *client.Client, t *tpm.TPM, serial string, macs []string, root *x509.Certificate) (*identity, string, error) {
	key, _, err := newTPMKey(ctx, t, nil)
	if err != nil {
		return nil, "", tpmHint(fmt.Errorf("TPM: %w", err))
	}
	return enrollToken(ctx, cfg, r, cl, key, serial, macs, root)
}

// hasSlug reports whether err is a CA problem with slug.
func hasSlug(err error, slug string) bool {
	var re *client.ResponseError
	return errors.As(err, &re) && re.Problem != nil && re.Problem.Slug() == slug
}

// tpmHint adds what to do about a TPM in dictionary-attack lockout.
func tpmHint(err error) error {
	if errors.Is(err, tpm.ErrLockout) {
		return fmt.Errorf("%w: wait for the TPM's lockout recovery time, or have its owner reset the lockout (tpm2_dictionarylockout --clear-lockout)", err)
	}
	return err
}

// checkTPMSpec refuses a --tpm value no build could open.
func checkTPMSpec(spec string) error {
	switch {
	case spec == "auto", spec == "none", spec == "simulator",
		strings.HasPrefix(spec, "/"), strings.HasPrefix(spec, "simulator:"),
		strings.HasPrefix(spec, "swtpm:unix:") && len(spec) > len("swtpm:unix:"),
		strings.HasPrefix(spec, "swtpm:tcp:") && len(spec) > len("swtpm:tcp:"):
		return nil
	}
	return usageErr("--tpm %q: want auto, none, a device path (/dev/tpmrm0), swtpm:unix:PATH or swtpm:tcp:HOST:PORT", spec)
}
