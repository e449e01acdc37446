//go:build tpmsimulator

package tpm

import (
	"fmt"

	"go.step.sm/crypto/tpm/simulator"
)

type simulatorTPM = simulator.Simulator

// openSimulator starts the in-process simulator, seeded when seed (16 hex
// digits) is set. Only one simulator runs per process: a second one waits
// for the first to be closed.
func openSimulator(seed string) (simulatorTPM, error) {
	var opts []simulator.NewSimulatorOption
	if seed != "" {
		opts = append(opts, simulator.WithSeed(seed))
	}
	sim, err := simulator.New(opts...)
	if err != nil {
		return nil, err
	}
	if err := sim.Open(); err != nil {
		return nil, fmt.Errorf("start simulator: %w", err)
	}
	return sim, nil
}
