package main

import (
	"fmt"
	"time"
)

// clockOffsetEnv is the test hook that runs the agent's clock ahead (or
// behind) by a Go duration, as 'ca serve' honours it: the end-to-end tests
// let certificates expire without waiting. It shifts the agent's own
// decisions (expiry, renewal time, the identity checks); the TLS handshake
// with the CA keeps the system clock. Never set it in production.
const clockOffsetEnv = "DEVPKI_TEST_CLOCK_OFFSET"

// envClock returns the agent's clock: nil (time.Now) unless
// $DEVPKI_TEST_CLOCK_OFFSET is set.
func envClock(getenv func(string) string) (func() time.Time, error) {
	v := getenv(clockOffsetEnv)
	if v == "" {
		return nil, nil
	}
	off, err := time.ParseDuration(v)
	if err != nil {
		return nil, usageErr("%s=%q is not a Go duration such as 48h", clockOffsetEnv, v)
	}
	return func() time.Time { return time.Now().Add(off) }, nil
}

// warnClock says on stderr that the clock is shifted.
func warnClock(c *config, getenv func(string) string) {
	if v := getenv(clockOffsetEnv); v != "" && c.Stderr != nil {
		fmt.Fprintf(c.Stderr, "enroll: warning: the clock is shifted by %s (%s): a test hook, unset it outside tests\n", v, clockOffsetEnv)
	}
}
