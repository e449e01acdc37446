package tpm

import (
	"context"
	"fmt"

	"github.com/google/go-tpm/legacy/tpm2"
)

// ResetLockout clears the TPM's dictionary-attack counter and lockout
// (TPM2_DictionaryAttackLockReset) using an empty lockout authorization, as
// on swtpm, the simulator and a TPM nobody took ownership of. It fails on a
// TPM whose lockout authorization is set, and is itself DA-protected by the
// lockout hierarchy: one failure blocks it for the TPM's lockoutRecovery
// time. Do not call it concurrently with other operations on t.
func (t *TPM) ResetLockout(ctx context.Context) error {
	rw, err := t.rawOpen()
	if err != nil {
		return fmt.Errorf("reset DA lockout: %w", err)
	}
	defer rw.Close()
	if err := tpm2.DictionaryAttackLockReset(rw, tpm2.AuthCommand{Session: tpm2.HandlePasswordSession, Attributes: tpm2.AttrContinueSession}); err != nil {
		return fmt.Errorf("reset DA lockout: %w", err)
	}
	return nil
}
