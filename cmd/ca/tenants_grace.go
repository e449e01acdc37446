package main

import (
	"fmt"
	"time"
)

// parseRenewGraceFlag reads --renew-grace: "0" (or "") the CA's
// renew.grace_period, "off" never (negative), else a positive duration.
func parseRenewGraceFlag(v string) (time.Duration, error) {
	switch v {
	case "", "0":
		return 0, nil
	case "off":
		return -1, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%w: --renew-grace %q is not a duration such as 72h, off or 0", errUsage, v)
	}
	return d, nil
}

// renewGraceText is a tenant's renewal grace period as the API and the CLI
// write it: "" for the CA's, "off", or the duration.
func renewGraceText(d time.Duration) string {
	switch {
	case d < 0:
		return "off"
	case d > 0:
		return d.String()
	}
	return ""
}
