package e2e

import (
	"bufio"
	"encoding/json"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAgentJSONLogEndToEnd: the real 'enroll run --log-format json'
// enrolls against a real CA and logs one JSON object per line — time,
// level, msg and the certificate's fields — until SIGTERM stops it.
func TestAgentJSONLogEndToEnd(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := ca.serve(t)
	dir := filepath.Join(t.TempDir(), "state")
	args := append([]string{"run", "--log-format", "json", "--tpm", "none"},
		enrollArgs(srv, ca.Fingerprint, ca.mintToken(t, srv).Token, dir, "E2E-JSONLOG")...)
	b := startEnroll(t, args...)
	b.waitStderr(t, `"msg":"certificate valid"`, 60*time.Second)
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	res := b.wait(t, 30*time.Second)
	if res.code != 0 {
		t.Fatalf("enroll run after SIGTERM: %s", res)
	}
	sc := bufio.NewScanner(strings.NewReader(res.stderr))
	var valid map[string]any
	n := 0
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("stderr line is not one JSON object: %q", sc.Text())
		}
		if m["time"] == nil || m["level"] == nil || m["msg"] == nil {
			t.Errorf("record without time, level or msg: %s", sc.Text())
		}
		if m["msg"] == "certificate valid" {
			valid = m
		}
		n++
	}
	if n < 3 || valid == nil {
		t.Fatalf("%d records, certificate valid %v:\n%s", n, valid, res.stderr)
	}
	cert := readCert(t, filepath.Join(dir, "device.crt"))
	if valid["certificate"] != cert.SerialNumber.Text(16) || valid["device"] != cert.Subject.CommonName || valid["next_renewal"] == nil ||
		valid["not_after"] != cert.NotAfter.UTC().Format(time.RFC3339) {
		t.Errorf("certificate valid record %v, certificate %s %s until %s", valid, cert.SerialNumber.Text(16),
			cert.Subject.CommonName, cert.NotAfter.UTC().Format(time.RFC3339))
	}
}
