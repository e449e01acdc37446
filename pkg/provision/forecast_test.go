package provision

import (
	"errors"
	"testing"
	"time"
)

func TestParseWithin(t *testing.T) {
	day := 24 * time.Hour
	for _, c := range []struct {
		in   string
		want time.Duration
	}{{"30d", 30 * day}, {"1d", day}, {"72h", 72 * time.Hour}, {"90m", 90 * time.Minute}, {" 7d ", 7 * day}, {"366d", 366 * day}} {
		if got, err := ParseWithin(c.in); err != nil || got != c.want {
			t.Errorf("ParseWithin(%q) = %s, %v; want %s", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "garbage", "30", "d", "-5d", "0d", "0", "-1h", "367d", "9000h", "99999999999999d", "1.5d", "3x"} {
		if got, err := ParseWithin(in); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ParseWithin(%q) = %s, %v; want ErrInvalidArgument", in, got, err)
		}
	}
}
