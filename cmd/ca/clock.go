package main

import (
	"fmt"
	"log/slog"
	"time"
)

// clockOffsetEnv names the test hook that runs the CA's clock ahead (or
// behind) by a Go duration: the end-to-end tests let certificates expire
// without waiting. It shifts what the CA decides with (expiry, grace
// periods, challenges, the TLS peer check) and what it signs (notBefore,
// notAfter); the operating system's clock is untouched. Never set it in
// production: 'ca serve' logs a warning when it is.
const clockOffsetEnv = "DEVPKI_TEST_CLOCK_OFFSET"

// serviceClock returns the CA's clock: time.Now shifted by
// $DEVPKI_TEST_CLOCK_OFFSET when set.
func serviceClock(getenv func(string) string, log *slog.Logger) (func() time.Time, error) {
	v := getenv(clockOffsetEnv)
	if v == "" {
		return time.Now, nil
	}
	off, err := time.ParseDuration(v)
	if err != nil {
		return nil, fmt.Errorf("%s=%q is not a Go duration such as 48h", clockOffsetEnv, v)
	}
	log.Warn("the CA's clock is shifted by a test hook: unset it outside tests", "env", clockOffsetEnv, "offset", off.String())
	return func() time.Time { return time.Now().Add(off) }, nil
}
