package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"devpki/pkg/registry"
	"devpki/pkg/registry/sqlstore"
)

// TestSeed fills a registry with test/seed (the tool docs/BENCHMARKS.md
// uses for a million devices) and checks the result as an operator would:
// the counts, every certificate signed by the CA for its device, the list
// commands through the real server, and the audit chain. A second run
// refuses a registry that already holds devices; with -force it resumes,
// adding nothing that is already there. PostgreSQL too with
// DEVPKI_TEST_POSTGRES_DSN.
func TestSeed(t *testing.T) {
	seedBin := filepath.Join(t.TempDir(), "seed")
	if out, err := exec.Command("go", "build", "-o", seedBin, "devpki/test/seed").CombinedOutput(); err != nil {
		t.Fatalf("go build test/seed: %v\n%s", err, out)
	}
	t.Run("sqlite", func(t *testing.T) { testSeed(t, seedBin, "", 2000, 200) })
	t.Run("postgres", func(t *testing.T) {
		dsn := os.Getenv("DEVPKI_TEST_POSTGRES_DSN")
		if dsn == "" {
			t.Skip("DEVPKI_TEST_POSTGRES_DSN not set (key=value form)")
		}
		testSeed(t, seedBin, freshPostgresDB(t, dsn), 600, 60)
	})
}

func testSeed(t *testing.T, seedBin, pgDSN string, devices, revoked int) {
	ctx := context.Background()
	ca := initCA(t)
	driver, dsn := sqlstore.DriverSQLite, ca.DB
	if pgDSN != "" {
		usePostgres(t, ca, pgDSN)
		driver, dsn = sqlstore.DriverPostgres, pgDSN
	}
	const tenants = 3
	args := []string{"-config", ca.Config, "-devices", strconv.Itoa(devices), "-revoked", strconv.Itoa(revoked),
		"-tenants", strconv.Itoa(tenants), "-quiet"}

	// Bad flags: refused, nothing written.
	for _, bad := range [][]string{
		{"-devices", "10"},
		{"-config", ca.Config, "-devices", "10", "-revoked", "11"},
		{"-config", ca.Config, "-devices", "0"},
		{"-config", ca.Config, "-tenants", "100"},
		{"-config", filepath.Join(ca.Dir, "missing.yaml")},
	} {
		res := run(t, nil, seedBin, bad...)
		if res.code == 0 || !strings.Contains(res.stderr, "seed:") {
			t.Fatalf("seed %v: want a refusal\n%s", bad, res)
		}
	}

	res := mustRun(t, nil, seedBin, args...)
	if want := "seeded " + strconv.Itoa(devices) + " devices (0 already there)"; !strings.Contains(res.stdout, want) {
		t.Fatalf("seed: want %q\n%s", want, res)
	}
	// Not again into a registry with devices ...
	res = run(t, nil, seedBin, args...)
	if res.code == 0 || !strings.Contains(res.stderr, "already holds devices") || !strings.Contains(res.stderr, "-force") {
		t.Fatalf("seed into a seeded registry: want a refusal naming -force\n%s", res)
	}
	// ... unless forced: the same flags resume, finding everything done.
	res = mustRun(t, nil, seedBin, append(args, "-force")...)
	if want := "seeded 0 devices (" + strconv.Itoa(devices) + " already there)"; !strings.Contains(res.stdout, want) ||
		!strings.Contains(res.stdout, "revoked 0 ("+strconv.Itoa(revoked)+" already)") {
		t.Fatalf("seed -force over a finished seed: want %q and the revocations already made\n%s", want, res)
	}

	// The registry: counts, statuses, certificates signed by the CA.
	st, err := sqlstore.Open(ctx, sqlstore.Options{Driver: driver, DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(readCerts(t, filepath.Join(ca.Dir, "root.crt"))[0])
	inters.AddCert(readCerts(t, filepath.Join(ca.Dir, "intermediate.crt"))[0])
	byStatus := map[registry.DeviceStatus]int{}
	perTenant := map[string]int{}
	revokedIn, activeIn := map[string]int{}, map[string]int{}
	macs := map[string]bool{}
	var firstMAC, firstRevoked, firstTenant string
	for after := ""; ; {
		page, err := st.ListDevices(ctx, registry.DeviceFilter{After: after, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range page {
			byStatus[d.Status]++
			perTenant[d.TenantID]++
			if d.Status == registry.DeviceRevoked {
				revokedIn[d.TenantID]++
			} else {
				activeIn[d.TenantID]++
			}
			for _, m := range d.MACs {
				if macs[d.TenantID+m] {
					t.Fatalf("MAC %s twice in tenant %s", m, d.TenantID)
				}
				macs[d.TenantID+m] = true
			}
			if firstMAC == "" {
				firstMAC, firstTenant = d.MACs[0], d.TenantID
			}
			if firstRevoked == "" && d.Status == registry.DeviceRevoked && d.TenantID == firstTenant {
				firstRevoked = d.ID
			}
		}
		if len(page) < 1000 {
			break
		}
		after = page[len(page)-1].ID
	}
	if byStatus[registry.DeviceActive] != devices-revoked || byStatus[registry.DeviceRevoked] != revoked || len(perTenant) != tenants {
		t.Fatalf("devices by status %v in %d tenants; want %d active, %d revoked in %d tenants", byStatus, len(perTenant),
			devices-revoked, revoked, tenants)
	}
	certStatus := map[registry.CertStatus]int{}
	for after := ""; ; {
		page, err := st.ListCertificates(ctx, registry.CertFilter{Kind: registry.KindDevice, After: after, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range page {
			certStatus[c.Status]++
			x, err := x509.ParseCertificate(c.DER)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := x.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: time.Now(),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Fatalf("certificate %s of device %s does not verify against the CA: %v", c.Serial, c.DeviceID, err)
			}
			if x.Subject.CommonName != c.DeviceID || x.SerialNumber.Text(16) != c.Serial || !x.NotAfter.Equal(c.NotAfter) {
				t.Fatalf("certificate %s: subject %s serial %s notAfter %s, record %+v", c.Serial, x.Subject, x.SerialNumber.Text(16), x.NotAfter, c)
			}
		}
		if len(page) < 1000 {
			break
		}
		after = page[len(page)-1].Serial
	}
	if certStatus[registry.CertActive] != devices-revoked || certStatus[registry.CertRevoked] != revoked {
		t.Fatalf("device certificates by status %v; want %d active, %d revoked", certStatus, devices-revoked, revoked)
	}
	st.Close()

	// Through the real server, as an operator.
	srv := ca.serve(t)
	// The super-admin lists one seeded tenant (ids are names for tenants
	// made through provision).
	admin := func(args ...string) result {
		return mustRun(t, nil, caBin, append(args, "--config", ca.Config, "--ca", srv.URL, "--tenant", firstTenant)...)
	}
	var devs struct {
		Devices []struct{ ID, Status, Serial string } `json:"devices"`
		Next    string                                `json:"next"`
	}
	if err := json.Unmarshal([]byte(admin("devices", "list", "--mac", firstMAC, "--output", "json").stdout), &devs); err != nil || len(devs.Devices) != 1 {
		t.Fatalf("devices list --mac %s: %+v, %v", firstMAC, devs, err)
	}
	if err := json.Unmarshal([]byte(admin("devices", "list", "--serial", strings.ToLower(devs.Devices[0].Serial), "--output", "json").stdout), &devs); err != nil ||
		len(devs.Devices) != 1 {
		t.Fatalf("devices list --serial (folded): %+v, %v", devs, err)
	}
	if err := json.Unmarshal([]byte(admin("devices", "list", "--status", "revoked", "--limit", "1000", "--output", "json").stdout), &devs); err != nil ||
		len(devs.Devices) != revokedIn[firstTenant] || devs.Devices[0].ID != firstRevoked {
		t.Fatalf("devices list --status revoked: %d devices (first %+v), %v; want %d starting with %s", len(devs.Devices), devs.Devices[:min(1, len(devs.Devices))], err, revokedIn[firstTenant], firstRevoked)
	}
	// Expiring within the lifetime's first half: about half of the active
	// certificates, soonest first, page after page.
	var certs struct {
		Certificates []struct {
			Serial   string    `json:"serial"`
			NotAfter time.Time `json:"not_after"`
		} `json:"certificates"`
		Next string `json:"next"`
	}
	var expiring int
	var last time.Time
	for after, pages := "", 0; pages < 100; pages++ {
		args := []string{"certs", "list", "--expiring-before", "360h", "--status", "active", "--limit", "250", "--output", "json"}
		if after != "" {
			args = append(args, "--after", after)
		}
		certs.Next = ""
		if err := json.Unmarshal([]byte(admin(args...).stdout), &certs); err != nil {
			t.Fatal(err)
		}
		for _, c := range certs.Certificates {
			if c.NotAfter.Before(last) || c.NotAfter.After(time.Now().Add(360*time.Hour)) {
				t.Fatalf("certs list --expiring-before 360h: %s expires %s after %s", c.Serial, c.NotAfter, last)
			}
			last = c.NotAfter
		}
		expiring += len(certs.Certificates)
		if after = certs.Next; after == "" {
			break
		}
	}
	if active := activeIn[firstTenant]; expiring < active/4 || expiring > active*3/4 {
		t.Fatalf("certs list --expiring-before 360h: %d of %d active certificates (lifetime 720h): expiry is not spread", expiring, active)
	}
	res = run(t, nil, caBin, "certs", "list", "--expiring-before", "360h", "--after", "not-a-cursor", "--config", ca.Config, "--ca", srv.URL, "--tenant", firstTenant)
	if res.code == 0 || !strings.Contains(res.stderr, "cursor") {
		t.Fatalf("certs list --expiring-before with a serial as --after: want a refusal naming the cursor\n%s", res)
	}
	if res := mustRun(t, nil, caBin, "audit", "verify", "--config", ca.Config); !strings.Contains(res.stdout+res.stderr, "verified") {
		t.Fatalf("audit verify:\n%s", res)
	}
}
