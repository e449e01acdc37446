package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.step.sm/crypto/pemutil"
	"gopkg.in/yaml.v3"

	"devpki/api/wire"
)

// adminCase is one admin list query: a name and the request URL of its
// i-th send (values drawn from the registry, so each send finds rows).
type adminCase struct {
	name string
	url  func(i int) string
}

// adminFigures is one case's latencies.
type adminFigures struct {
	Case  string  `json:"case"`
	N     int     `json:"n"`
	Rows  float64 `json:"rows_per_page"`
	P50ms float64 `json:"p50_ms"`
	P99ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
	// The server's CPU, bytes read (rchar: from files, the page cache
	// included) and bytes read from the disk (read_bytes), per request,
	// over the case's measured requests.
	CPUms  float64 `json:"server_cpu_ms_per_request"`
	ReadKB float64 `json:"server_read_kb_per_request"`
	DiskKB float64 `json:"server_disk_read_kb_per_request"`
	// MajFlt is the server's major page faults (a page read from the disk
	// through a memory mapping) per request.
	MajFlt float64 `json:"server_major_faults_per_request"`
}

// runAdminList measures the admin list API of the CA in dir (typically a
// registry filled by test/seed) over mTLS with its admin certificate: for
// each filter, o.n GETs one after another on a keep-alive connection, each
// query drawn afresh, after o.warmup unmeasured ones; p50/p99 per filter,
// the server's peak and current RSS.
func runAdminList(o options, dir, base string, pool *x509.CertPool, pid int) error {
	hc, err := adminClient(dir, pool)
	if err != nil {
		return err
	}
	get := func(u string, out any) error {
		req, _ := http.NewRequest(http.MethodGet, base+u, nil)
		return send(hc, req, http.StatusOK, out)
	}
	// Sample devices from a few places in the id space.
	var sample []wire.Device
	for _, after := range []string{"", "3", "7", "b", "e"} {
		var l wire.DeviceList
		if err := get("/v1/admin/devices?limit=200&after="+after, &l); err != nil {
			return fmt.Errorf("sample devices: %w", err)
		}
		sample = append(sample, l.Devices...)
	}
	if len(sample) == 0 {
		return fmt.Errorf("the registry in %s holds no devices: fill it first (go run ./test/seed -config %s/ca.yaml -devices 1000000 -revoked 100000)", dir, dir)
	}
	pick := func(i int) wire.Device { return sample[(i*7919)%len(sample)] }
	hexAfter := func(i int) string { return fmt.Sprintf("%04x", (i*40503)&0xffff) }
	soon := time.Now().Add(10 * 24 * time.Hour).UTC().Format(time.RFC3339)
	// A certificate listing's cursor: not-after/serial (soonest-expiring first).
	expiringAfter := func(i int) string {
		at := time.Now().Add(time.Duration(1+i%5) * 24 * time.Hour).UTC()
		return url.QueryEscape(at.Format(time.RFC3339Nano) + "/" + hexAfter(i))
	}
	cases := []adminCase{
		// The floor: the same client and connection, no query, no audit.
		{"floor: GET /healthz", func(int) string { return "/healthz" }},
		{"devices: first page", func(int) string { return "/v1/admin/devices" }},
		{"devices: deep page (after=<id>)", func(i int) string { return "/v1/admin/devices?after=" + hexAfter(i) }},
		{"devices: serial", func(i int) string { return "/v1/admin/devices?serial=" + url.QueryEscape(pick(i).Serial) }},
		{"devices: MAC", func(i int) string { return "/v1/admin/devices?mac=" + pick(i).MACs[0] }},
		{"devices: status=revoked", func(int) string { return "/v1/admin/devices?status=revoked" }},
		{"devices: status=revoked, deep page", func(i int) string { return "/v1/admin/devices?status=revoked&after=" + hexAfter(i) }},
		{"devices: tenant", func(i int) string { return "/v1/admin/devices?tenant=" + pick(i).Tenant }},
		{"devices: tenant + status=active, deep page", func(i int) string {
			return "/v1/admin/devices?status=active&tenant=" + pick(i).Tenant + "&after=" + hexAfter(i)
		}},
		{"certs: first page", func(int) string { return "/v1/admin/certificates" }},
		{"certs: deep page (after=<not-after/serial>)", func(i int) string { return "/v1/admin/certificates?after=" + expiringAfter(i) }},
		{"certs: status=revoked", func(int) string { return "/v1/admin/certificates?status=revoked" }},
		{"certs: status=revoked, deep page", func(i int) string {
			return "/v1/admin/certificates?status=revoked&after=" + expiringAfter(i)
		}},
		{"certs: expiring_before=+10d", func(int) string { return "/v1/admin/certificates?expiring_before=" + soon }},
		{"certs: expiring_before=+10d, deep page", func(i int) string {
			return "/v1/admin/certificates?expiring_before=" + soon + "&after=" + expiringAfter(i)
		}},
		{"certs: expiring_before=+10d, status=active", func(int) string {
			return "/v1/admin/certificates?status=active&expiring_before=" + soon
		}},
		{"certs: tenant", func(i int) string { return "/v1/admin/certificates?tenant=" + pick(i).Tenant }},
		{"certs: tenant + status=active, deep page", func(i int) string {
			return "/v1/admin/certificates?status=active&tenant=" + pick(i).Tenant + "&after=" + expiringAfter(i)
		}},
	}
	var figs []adminFigures
	cpu0, _ := procCPU(pid)
	total := 0
	for _, c := range cases {
		for i := range o.warmup {
			if err := get(c.url(i), nil); err != nil {
				return fmt.Errorf("%s: %s: %w", c.name, c.url(i), err)
			}
		}
		lat := make([]time.Duration, o.n)
		rows := 0
		ccpu0, _ := procCPU(pid)
		io0 := procIO(pid)
		deadline := time.Now().Add(o.maxDuration)
		n := 0
		for ; n < o.n && time.Now().Before(deadline); n++ {
			u := c.url(rand.IntN(1 << 20))
			var page struct {
				Devices      []json.RawMessage `json:"devices"`
				Certificates []json.RawMessage `json:"certificates"`
			}
			t0 := time.Now()
			if err := get(u, &page); err != nil {
				return fmt.Errorf("%s: %s: %w", c.name, u, err)
			}
			lat[n] = time.Since(t0)
			rows += len(page.Devices) + len(page.Certificates)
		}
		ccpu1, _ := procCPU(pid)
		io1 := procIO(pid)
		lat = lat[:n]
		total += o.warmup + n // the server's CPU is read over the warm-ups too
		slices.Sort(lat)
		f := adminFigures{Case: c.name, N: n, Rows: float64(rows) / float64(n), P50ms: ms(lat[n/2]), P99ms: ms(lat[min(n-1, n*99/100)]), MaxMs: ms(lat[n-1]),
			CPUms: ms(ccpu1-ccpu0) / float64(n), ReadKB: float64(io1.rchar-io0.rchar) / 1024 / float64(n),
			DiskKB: float64(io1.readBytes-io0.readBytes) / 1024 / float64(n), MajFlt: float64(io1.majflt-io0.majflt) / float64(n)}
		figs = append(figs, f)
		if !o.jsonOut {
			fmt.Printf("%-46s n=%-5d rows/page %6.1f   p50 %7.2f ms   p99 %7.2f ms   max %7.2f ms   server: cpu %5.2f ms, read %6.0f KB, disk %5.0f KB, major faults %5.1f\n",
				f.Case, f.N, f.Rows, f.P50ms, f.P99ms, f.MaxMs, f.CPUms, f.ReadKB, f.DiskKB, f.MajFlt)
		}
	}
	cpu1, _ := procCPU(pid)
	rss := procStatusMB(pid, "VmRSS:")
	hwm := maxRSSMB(pid)
	if o.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"cases": figs, "server_rss_mb": rss, "server_max_rss_mb": hwm,
			"server_cpu_ms_per_request": ms(cpu1-cpu0) / float64(total)})
	}
	fmt.Printf("server RSS now %.0f MB, peak %.0f MB; server CPU per request %.2f ms\n", rss, hwm, ms(cpu1-cpu0)/float64(total))
	return nil
}

// adminClient is a keep-alive client presenting the admin certificate that
// dir/ca.yaml names (admin.cert, admin.key decrypted with its password).
func adminClient(dir string, pool *x509.CertPool) (*http.Client, error) {
	b, err := os.ReadFile(filepath.Join(dir, "ca.yaml"))
	if err != nil {
		return nil, err
	}
	var cfg struct {
		PasswordFile string `yaml:"password_file"`
		Admin        struct {
			Cert string `yaml:"cert"`
			Key  string `yaml:"key"`
		} `yaml:"admin"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s/ca.yaml: %w", dir, err)
	}
	rel := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	pw := []byte(os.Getenv("DEVPKI_PASSWORD"))
	if cfg.PasswordFile != "" {
		if pw, err = os.ReadFile(rel(cfg.PasswordFile)); err != nil {
			return nil, fmt.Errorf("the admin key's password: %w", err)
		}
		pw = bytes.TrimRight(pw, "\r\n")
	}
	certPEM, err := os.ReadFile(rel(cfg.Admin.Cert))
	if err != nil {
		return nil, fmt.Errorf("admin certificate: %w", err)
	}
	key, err := pemutil.Read(rel(cfg.Admin.Key), pemutil.WithPassword(pw))
	if err != nil {
		return nil, fmt.Errorf("admin key %s: %w", rel(cfg.Admin.Key), err)
	}
	var chain [][]byte
	for rest := certPEM; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		chain = append(chain, blk.Bytes)
	}
	tc := tls.Certificate{Certificate: chain, PrivateKey: key}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{tc}},
	}}, nil
}

func procStatusMB(pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte(field)); ok {
			var kb float64
			fmt.Sscan(string(v), &kb)
			return kb / 1024
		}
	}
	return 0
}

// procIOCounts is what /proc/PID/io and /proc/PID/stat count of a
// process's reads.
type procIOCounts struct{ rchar, readBytes, majflt int64 }

// procIO reads the server's read counters (zero when unreadable).
func procIO(pid int) procIOCounts {
	var c procIOCounts
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the ")" that closes comm: state is field 3, majflt 12.
		if f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:])); len(f) > 9 {
			c.majflt, _ = strconv.ParseInt(f[9], 10, 64)
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return c
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		k, v, ok := bytes.Cut(line, []byte(": "))
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(string(v), 10, 64)
		switch string(k) {
		case "rchar":
			c.rchar = n
		case "read_bytes":
			c.readBytes = n
		}
	}
	return c
}
