package main

import (
	"fmt"
	"time"

	"devpki/pkg/provision"
)

// RenewConfig is the renewal policy (ca.yaml "renew").
type RenewConfig struct {
	// GracePeriod is how long after its certificate expired a device may
	// still renew it by proving it holds the certificate's key over a
	// fresh nonce (POST /v1/renew/expired; 'enroll run' does it when it
	// wakes up with an expired certificate). Absent means 720h (30 days);
	// 0 turns it off (an expired device then re-enrolls with a token bound
	// to its serial). A tenant's renew_grace ('ca tenants set
	// --renew-grace') overrides it.
	GracePeriod *Duration `yaml:"grace_period,omitempty"`
}

// maxRenewGrace bounds renew.grace_period.
const maxRenewGrace = provision.MaxTenantRenewGrace

// Grace is renew.grace_period as provision.Config.RenewGrace takes it:
// zero for the default, negative for off.
func (r RenewConfig) Grace() time.Duration {
	switch {
	case r.GracePeriod == nil:
		return 0
	case *r.GracePeriod == 0:
		return -1
	}
	return time.Duration(*r.GracePeriod)
}

// validate returns the problems of r.
func (r RenewConfig) validate() []error {
	if r.GracePeriod != nil && (*r.GracePeriod < 0 || time.Duration(*r.GracePeriod) > maxRenewGrace) {
		return []error{fmt.Errorf("renew.grace_period: %s is not within [0, %s] (0 turns renewal of expired certificates off)",
			time.Duration(*r.GracePeriod), maxRenewGrace)}
	}
	return nil
}
