package tpm

import "testing"

// StartSWTPM starts a fresh swtpm for the external tests and returns its
// Open spec.
func StartSWTPM(tb testing.TB) string { return startSWTPM(tb).Spec() }
