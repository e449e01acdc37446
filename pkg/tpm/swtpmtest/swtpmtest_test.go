package swtpmtest

import (
	"os"
	"strings"
	"testing"

	"github.com/google/go-tpm/legacy/tpm2"
)

func TestLaunchStop(t *testing.T) {
	for _, opts := range []Options{{}, {TCP: true}} {
		name := "unix"
		if opts.TCP {
			name = "tcp"
		}
		t.Run(name, func(t *testing.T) {
			i := StartOptions(t, opts)
			if want := map[bool]string{false: "swtpm:unix:", true: "swtpm:tcp:"}[opts.TCP]; !strings.HasPrefix(i.Spec(), want) {
				t.Errorf("Spec() = %q, want prefix %q", i.Spec(), want)
			}
			rw := i.Conn()
			vals, _, err := tpm2.GetCapability(rw, tpm2.CapabilityTPMProperties, 1, uint32(tpm2.LockoutCounter))
			rw.Close()
			if err != nil {
				t.Fatal(err)
			}
			if n := vals[0].(tpm2.TaggedProperty).Value; n != 0 {
				t.Errorf("fresh swtpm: DA lockout counter %d", n)
			}
			// The EK certificate chains to the local CA this package reads.
			if Roots(t) == nil || Intermediates(t) == nil {
				t.Fatal("no local CA pools")
			}
			if err := i.Stop(); err != nil {
				t.Fatal(err)
			}
			if err := i.Stop(); err != nil {
				t.Fatalf("second Stop: %v", err)
			}
			if _, err := os.Stat(i.Dir); !os.IsNotExist(err) {
				t.Errorf("Dir %s after Stop: %v", i.Dir, err)
			}
		})
	}
}

func TestLocalCAPEM(t *testing.T) {
	Start(t) // creates the local CA on a fresh machine
	for name, read := range map[string]func() ([]byte, error){"RootsPEM": RootsPEM, "IntermediatesPEM": IntermediatesPEM} {
		b, err := read()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !strings.Contains(string(b), "-----BEGIN CERTIFICATE-----") {
			t.Errorf("%s: no PEM certificate", name)
		}
	}
}
