package main

import (
	"bufio"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// jsonLines parses every line of s as one JSON object with time, level and
// msg, failing the test on any other line.
func jsonLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not one JSON object: %q: %v", sc.Text(), err)
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := m[k]; !ok {
				t.Errorf("log line without %q: %s", k, sc.Text())
			}
		}
		if _, err := time.Parse(time.RFC3339Nano, m["time"].(string)); err != nil {
			t.Errorf("time %v: %v", m["time"], err)
		}
		out = append(out, m)
	}
	return out
}

// TestAgentJSONLog: 'enroll run --log-format json' writes one JSON object
// per line — enrolling, a failed try as a warning with its error and
// delay, the certificate and its next renewal as fields, each renewal —
// and nothing else on stderr.
func TestAgentJSONLog(t *testing.T) {
	f := newFakeCA(t)
	h := newHarness(t, f)
	f.UseClock(t, h.cfg.Now)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sleep := h.cfg.Sleep
	h.cfg.Sleep = func(ctx context.Context, d time.Duration) error {
		if f.RenewHits.Load() >= 3 {
			cancel()
			return ctx.Err()
		}
		return sleep(ctx, d)
	}
	a, err := parseAgentFlags("run", []string{"--dir", h.cfg.Dir, "--log-format", "json"}, &h.stderr)
	if err != nil {
		t.Fatal(err)
	}
	log := a.cfg.Log // the harness's config, with the logger the flag made
	a.cfg = h.cfg
	a.cfg.Log = log
	a.fingerprint = f.Fingerprint()
	// The enrollment meets a 500 the agent retries.
	f.Then(problem(500, "internal", "boom"))
	if err := runAgent(ctx, a, nil); err != nil {
		t.Fatalf("run: %v\n%s", err, h.stderr.String())
	}
	lines := jsonLines(t, h.stderr.String())
	find := func(msg string) map[string]any {
		for _, m := range lines {
			if m["msg"] == msg {
				return m
			}
		}
		t.Errorf("no %q record in\n%s", msg, h.stderr.String())
		return map[string]any{}
	}
	if m := find("certificate valid"); m["level"] != "INFO" || m["certificate"] == nil || m["device"] == nil ||
		m["not_after"] == nil || m["next_renewal"] == nil {
		t.Errorf("certificate valid: %v", m)
	}
	if m := find("enroll failed; retrying"); m["level"] != "WARN" || !strings.Contains(m["err"].(string), "boom") || m["retry_in"] == nil {
		t.Errorf("retry: %v", m)
	}
	if m := find("renewed"); m["certificate"] == nil || m["not_after"] == nil {
		t.Errorf("renewed: %v", m)
	}
	found := false
	for _, m := range lines {
		found = found || strings.HasPrefix(m["msg"].(string), "no identity in ")
	}
	if !found {
		t.Errorf("no enrolling record in\n%s", h.stderr.String())
	}
	if strings.Contains(h.stderr.String(), "\nenroll: ") || strings.HasPrefix(h.stderr.String(), "enroll: ") {
		t.Errorf("text lines in the JSON log:\n%s", h.stderr.String())
	}
	if testing.Verbose() {
		t.Log(h.stderr.String())
	}
}

// TestAgentLogFormatFlag: the default stays text; an unknown format is a
// usage error; a failing 'enroll run --log-format json' ends with a JSON
// error record carrying its exit code.
func TestAgentLogFormatFlag(t *testing.T) {
	var stderr strings.Builder
	a, err := parseAgentFlags("run", []string{"--dir", "x"}, &stderr)
	if err != nil || a.cfg.Log != nil {
		t.Fatalf("default: %v %v, want text (no logger)", err, a)
	}
	if _, err := parseAgentFlags("run", []string{"--dir", "x", "--log-format", "xml"}, &stderr); exitCode(err) != exitUsage ||
		!strings.Contains(err.Error(), `--log-format "xml" is neither text nor json`) {
		t.Errorf("--log-format xml: %v", err)
	}
	stderr.Reset()
	var stdout strings.Builder
	dir := filepath.Join(t.TempDir(), "empty")
	code := run(context.Background(), []string{"run", "--dir", dir, "--log-format", "json", "--tpm", "none"}, &stdout, &stderr,
		func(string) string { return "" })
	if code != exitUsage {
		t.Errorf("run without a CA or token: exit %d, want %d\n%s", code, exitUsage, stderr.String())
	}
	lines := jsonLines(t, stderr.String())
	last := lines[len(lines)-1]
	if last["level"] != "ERROR" || last["msg"] != "enroll run failed" || last["err"] == nil || last["exit_code"] != float64(exitUsage) {
		t.Errorf("last record %v", last)
	}
}
