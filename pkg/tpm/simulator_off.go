//go:build !tpmsimulator

package tpm

import (
	"fmt"
	"io"
)

func openSimulator(string) (simulatorTPM, error) {
	return nil, fmt.Errorf("the TPM simulator is %w in this build (rebuild with -tags tpmsimulator and cgo)", ErrUnsupported)
}

type simulatorTPM interface {
	io.ReadWriteCloser
	Open() error
	MeasurementLog() ([]byte, error)
}
