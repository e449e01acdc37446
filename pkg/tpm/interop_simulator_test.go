//go:build tpmsimulator

package tpm_test

import "testing"

// TestSimulatorWithVerify trusts the simulator's EK by its public key, the
// allow-list path (the simulator has no EK certificate).
func TestSimulatorWithVerify(t *testing.T) {
	enrollAgainstVerify(t, "simulator", nil, nil)
}
