//go:build !tpmsimulator

package tpm

import (
	"context"
	"errors"
	"testing"
)

func TestSimulatorNeedsTag(t *testing.T) {
	_, err := Open(context.Background(), "simulator", Options{StateDir: t.TempDir()})
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Open(simulator) without the tag = %v, want ErrUnsupported", err)
	}
}
