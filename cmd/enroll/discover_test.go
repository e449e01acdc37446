package main

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDiscoverSerial(t *testing.T) {
	t.Parallel()
	write := func(t *testing.T, content string) string {
		p := filepath.Join(t.TempDir(), "serial")
		if err := os.WriteFile(p, []byte(content), 0o444); err != nil {
			t.Fatal(err)
		}
		return p
	}
	missing := "/nonexistent/devpki/product_serial"
	tests := []struct {
		name     string
		contents []string // one fake file each; "" + missing path handled below
		want     string
		wantErr  []string
	}{
		{"dmi", []string{"PF3ABC12\n"}, "PF3ABC12", nil},
		{"device tree NUL terminated", []string{"", "10000000deadbeef\x00"}, "10000000deadbeef", nil},
		{"dmi placeholder falls through", []string{"To Be Filled By O.E.M.\n", "RPI-42\x00"}, "RPI-42", nil},
		{"all placeholders", []string{"Default string\n", "0\x00"}, "", []string{`placeholder "Default string"`, `placeholder "0"`, "--serial"}},
		{"other placeholders", []string{"None", " Not Specified \n", "00000000"}, "", []string{"None", "Not Specified", "00000000"}},
		{"empty", []string{"\x00\n"}, "", []string{"empty", "--serial"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var paths []string
			for _, c := range tt.contents {
				if c == "" {
					paths = append(paths, missing)
					continue
				}
				paths = append(paths, write(t, c))
			}
			got, err := discovery{SerialPaths: paths}.Serial()
			if tt.wantErr == nil {
				if err != nil || got != tt.want {
					t.Fatalf("Serial() = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Serial() = %q, want an error", got)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}

	t.Run("nothing readable names every path", func(t *testing.T) {
		_, err := discovery{SerialPaths: []string{missing, "/nonexistent/device-tree/serial-number"}}.Serial()
		if err == nil {
			t.Fatal("no error")
		}
		for _, w := range []string{missing, "/nonexistent/device-tree/serial-number", "no such file", "pass --serial"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q lacks %q", err, w)
			}
		}
	})
}

func TestDiscoverMAC(t *testing.T) {
	t.Parallel()
	mac := func(s string) net.HardwareAddr {
		m, err := net.ParseMAC(s)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	lo := net.Interface{Index: 1, Name: "lo", Flags: net.FlagLoopback | net.FlagUp}
	zero := net.Interface{Index: 2, Name: "dummy0", HardwareAddr: mac("00:00:00:00:00:00")}
	tun := net.Interface{Index: 3, Name: "tun0"}
	ib := net.Interface{Index: 4, Name: "ib0", HardwareAddr: make(net.HardwareAddr, 20)}
	ib.HardwareAddr[19] = 1
	eth0 := net.Interface{Index: 5, Name: "eth0", HardwareAddr: mac("dc:a6:32:01:02:03")}
	wlan0 := net.Interface{Index: 6, Name: "wlan0", HardwareAddr: mac("dc:a6:32:09:09:09")}

	list := func(ifs ...net.Interface) func() ([]net.Interface, error) {
		return func() ([]net.Interface, error) { return ifs, nil }
	}
	got, err := discovery{Interfaces: list(wlan0, lo, eth0, zero, tun, ib)}.MAC()
	if err != nil || got != "dc:a6:32:01:02:03" {
		t.Errorf("MAC() = %q, %v; want eth0's (lowest index)", got, err)
	}

	_, err = discovery{Interfaces: list(lo, zero, tun, ib)}.MAC()
	if err == nil {
		t.Fatal("no error without a usable interface")
	}
	for _, w := range []string{"lo: loopback", "dummy0: all-zero", "tun0: no 48-bit", "pass --mac"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	_, err = discovery{Interfaces: func() ([]net.Interface, error) { return nil, errors.New("netlink down") }}.MAC()
	if err == nil || !strings.Contains(err.Error(), "netlink down") || !strings.Contains(err.Error(), "--mac") {
		t.Errorf("error %v", err)
	}
}

// With no --serial and --mac, enrollment discovers both; with nothing to
// discover it fails before contacting the CA.
func TestEnrollDiscovers(t *testing.T) {
	t.Parallel()
	f := newFakeCA(t)
	serialFile := filepath.Join(t.TempDir(), "serial-number")
	os.WriteFile(serialFile, []byte("BOARD-77\x00"), 0o444)
	eth := net.Interface{Index: 2, Name: "eth0", HardwareAddr: net.HardwareAddr{0x02, 0, 0, 0, 0, 0x07}}

	h := newHarness(t, f)
	h.cfg.Serial, h.cfg.MACs = "", nil
	h.cfg.Discovery = discovery{
		SerialPaths: []string{"/nonexistent/product_serial", serialFile},
		Interfaces:  func() ([]net.Interface, error) { return []net.Interface{eth}, nil },
	}
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	if f.lastSerial != "BOARD-77" || len(f.lastMACs) != 1 || f.lastMACs[0] != "020000000007" {
		t.Errorf("CA saw serial %q macs %v", f.lastSerial, f.lastMACs)
	}

	h = newHarness(t, f)
	h.cfg.Serial = ""
	h.cfg.Discovery = discovery{SerialPaths: []string{"/nonexistent/a", "/nonexistent/b"}}
	before := f.RootsHits.Load()
	err := h.run()
	if code := exitCode(err); code != exitFailure || !strings.Contains(err.Error(), "pass --serial") {
		t.Fatalf("exit %d, %v", code, err)
	}
	if f.RootsHits.Load() != before {
		t.Error("contacted the CA without a serial")
	}
}

func TestWriteFileAtomic(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := writeFileAtomic(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(p, []byte("new secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	st, _ := os.Stat(p)
	if string(b) != "new secret" || st.Mode().Perm() != 0o600 {
		t.Errorf("content %q mode %v", b, st.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want 1 (temp file left?)", len(entries))
	}
	// A failed write leaves neither a temp file nor a change.
	if err := writeFileAtomic(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600); err == nil {
		t.Error("write into a missing directory succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("directory holds %d entries after a failed write", len(entries))
	}
}

func TestLoadIdentityRejectsExpired(t *testing.T) {
	t.Parallel()
	f := newFakeCA(t)
	h := newHarness(t, f)
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(365 * 24 * time.Hour)
	if _, err := loadIdentity(context.Background(), newKeyring(h.cfg.Dir, ""), f.Fingerprint(), later); err == nil || errors.Is(err, os.ErrNotExist) {
		t.Errorf("expired identity: err = %v", err)
	}
	if _, err := loadIdentity(context.Background(), newKeyring(h.cfg.Dir, ""), strings.Repeat("00", 32), time.Now()); err == nil {
		t.Error("identity accepted under another pin")
	}
	// Without device.crt the state is "not enrolled".
	os.Remove(filepath.Join(h.cfg.Dir, certFile))
	if _, err := loadIdentity(context.Background(), newKeyring(h.cfg.Dir, ""), f.Fingerprint(), time.Now()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("without device.crt: err = %v, want not-exist", err)
	}
}

func TestLoadIdentityMissingKeyIsBroken(t *testing.T) {
	t.Parallel()
	f := newFakeCA(t)
	h := newHarness(t, f)
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(h.cfg.Dir, keyFile))
	_, err := loadIdentity(context.Background(), newKeyring(h.cfg.Dir, ""), f.Fingerprint(), time.Now())
	if err == nil || errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v, want a broken identity (not not-exist)", err)
	}
	// The next run reports it and enrolls anew.
	if err := h.run(); err != nil || !strings.Contains(h.stderr.String(), "not usable") {
		t.Errorf("re-enroll: %v\n%s", err, &h.stderr)
	}
	checkState(t, h.cfg.Dir, nil, stateFiles)
}
