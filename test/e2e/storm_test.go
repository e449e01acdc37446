package e2e

import (
	"database/sql"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// stormLimits are tight on purpose: two requests in flight, a queue of two
// waiting 50 ms, 20 enrollments a second for the tenant, so a small storm
// meets both 429 rate-limited and 503 overloaded.
const stormLimits = "max_in_flight: 2, max_queued: 2, queue_wait: 50ms, per_tenant_rate: 20, per_tenant_burst: 20"

// stormResult is the part of test/load's -target storm -json output the
// test reads.
type stormResult struct {
	Devices           int              `json:"devices"`
	Enrolled          int              `json:"enrolled"`
	Failed            int              `json:"failed"`
	FirstFailure      string           `json:"first_failure"`
	EnrollStatuses    map[string]int64 `json:"enroll_statuses"`
	RegistryDevices   int64            `json:"registry_devices"`
	DuplicateDevices  int64            `json:"duplicate_devices"`
	DevicesNotOneCert int64            `json:"devices_without_exactly_one_active_cert"`
	TokenUsesLeft     int64            `json:"token_uses_left"`
	ReplyErrors       int64            `json:"reply_errors"`
	AdminRequests     int64            `json:"admin_requests"`
	AdminErrors       int64            `json:"admin_errors"`
	AdminFirstErr     string           `json:"admin_first_error"`
	LogOverloaded     int64            `json:"access_log_overloaded"`
	LogBusyDB         int64            `json:"log_busy_database_lines"`
}

// TestStorm: a fleet storm through the real binaries — test/load's
// -target storm starts `ca serve` and runs 300 device agents at once, each
// with its own key, CSR and loopback address and the agent's own retry
// policy (api/client.Retrier), against tight limits. Every device enrolls;
// the enrollment door answers only 201, 429 and 503 (both refusals
// happen: the devices ride out rate limiting and load shedding); the
// registry holds each device once with exactly one active certificate and
// the token is fully spent; each shed request is in the access log; the
// admin API answered every poll meanwhile. On SQLite the registry is also
// read here and the audit chain verified; with DEVPKI_TEST_POSTGRES_DSN two
// replicas share a fresh PostgreSQL database.
func TestStorm(t *testing.T) {
	loadBin := filepath.Join(t.TempDir(), "load")
	if out, err := exec.Command("go", "build", "-o", loadBin, "devpki/test/load").CombinedOutput(); err != nil {
		t.Fatalf("go build devpki/test/load: %v\n%s", err, out)
	}
	const devices = 300
	storm := func(t *testing.T, args ...string) stormResult {
		t.Helper()
		argv := append([]string{"-target", "storm", "-devices", "300", "-ca-bin", caBin, "-ca-limits", stormLimits,
			"-max-duration", "5m", "-json"}, args...)
		cmd := exec.Command(loadBin, argv...)
		cmd.Env = cleanEnv()
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		var res stormResult
		if jerr := json.Unmarshal(out, &res); jerr != nil {
			t.Fatalf("load %s: %v (%v)\nstdout:\n%s\nstderr:\n%s", strings.Join(argv, " "), err, jerr, out, stderr.String())
		}
		if err != nil {
			t.Errorf("load exited with %v\n%s", err, stderr.String())
		}
		t.Logf("storm: %s", out)
		if res.Devices != devices || res.Enrolled != devices || res.Failed != 0 || res.ReplyErrors != 0 {
			t.Errorf("%d of %d devices enrolled, %d failed (%s), %d replies refused", res.Enrolled, devices, res.Failed, res.FirstFailure, res.ReplyErrors)
		}
		for k, v := range res.EnrollStatuses {
			if code := strings.Fields(k)[0]; code != "201" && code != "429" && code != "503" {
				t.Errorf("enrollment answered %q %d times; only 201, 429 and 503 are allowed", k, v)
			}
		}
		if res.EnrollStatuses["201"] != devices {
			t.Errorf("%d answers 201, want one per device (%d)", res.EnrollStatuses["201"], devices)
		}
		if res.EnrollStatuses["429 rate-limited"] == 0 || res.EnrollStatuses["503 overloaded"] == 0 {
			t.Errorf("statuses %v: the limits should have refused some attempts with 429 rate-limited and shed some with 503 overloaded", res.EnrollStatuses)
		}
		if res.LogOverloaded != res.EnrollStatuses["503 overloaded"] {
			t.Errorf("access logs name %d overloaded requests, the devices saw %d", res.LogOverloaded, res.EnrollStatuses["503 overloaded"])
		}
		if res.RegistryDevices != devices || res.DuplicateDevices != 0 || res.DevicesNotOneCert != 0 || res.TokenUsesLeft != 0 {
			t.Errorf("registry: %d devices, %d duplicates, %d without exactly one active certificate, %d token uses left; want %d, 0, 0, 0",
				res.RegistryDevices, res.DuplicateDevices, res.DevicesNotOneCert, res.TokenUsesLeft, devices)
		}
		if res.AdminRequests == 0 || res.AdminErrors != 0 {
			t.Errorf("admin API polled %d times, %d errors (%s)", res.AdminRequests, res.AdminErrors, res.AdminFirstErr)
		}
		if res.LogBusyDB != 0 {
			t.Errorf("%d busy-database lines in the replicas' logs", res.LogBusyDB)
		}
		return res
	}

	t.Run("sqlite", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "ca")
		storm(t, "-dir", dir)
		// The registry as this test reads it, and its audit chain.
		db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "registry.db")+"?_busy_timeout=10000")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		reg := &regDB{DB: db}
		if n := reg.count(t, `SELECT COUNT(*) FROM devices`); n != devices {
			t.Errorf("%d devices in the registry, want %d", n, devices)
		}
		if n := reg.count(t, `SELECT COUNT(*) FROM (SELECT serial_folded FROM devices GROUP BY tenant_id, serial_folded HAVING COUNT(*) > 1) d`); n != 0 {
			t.Errorf("%d serials recorded more than once", n)
		}
		if n := reg.count(t, `SELECT COUNT(*) FROM devices d WHERE (SELECT COUNT(*) FROM certificates c WHERE c.device_id = d.id AND c.status = 'active') <> 1`); n != 0 {
			t.Errorf("%d devices without exactly one active certificate", n)
		}
		mustRun(t, nil, caBin, "audit", "verify", "--config", filepath.Join(dir, "ca.yaml"))
	})
	t.Run("postgres-2-replicas", func(t *testing.T) {
		dsn := os.Getenv("DEVPKI_TEST_POSTGRES_DSN")
		if dsn == "" || strings.Contains(dsn, "://") {
			t.Skip("DEVPKI_TEST_POSTGRES_DSN not set (key=value form)")
		}
		storm(t, "-storm-db", "postgres", "-replicas", "2", "-pg-dsn", dsn)
	})
}
