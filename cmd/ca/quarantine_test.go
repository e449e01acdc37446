package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"devpki/api/client"
	"devpki/api/wire"
)

// TestQuarantineCommands: 'ca devices list --status quarantined [--all]'
// prints the claims (status, serial, MACs, EK hash, reason, conflicting
// device, count, first and last seen), 'ca devices dismiss ID' posts the
// dismissal and 'ca devices release ID [--reason R]' the release, against
// a stand-in CA that records what it was asked.
func TestQuarantineCommands(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if err := run(ctx, []string{"init", "--dir", dir, "--dev"}, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, fileConfig)
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	password, err := cfg.Password()
	if err != nil {
		t.Fatal(err)
	}
	pair, err := loadKeyPair(cfg.Path(cfg.TLS.Cert), cfg.Path(cfg.TLS.Key), password)
	if err != nil {
		t.Fatal(err)
	}

	first := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	held := wire.QuarantinedClaim{
		ID: "0192-q1", Tenant: "default", Serial: "SN-CLONE-1", MACs: []string{"020000000001", "020000000002"},
		EKHash: strings.Repeat("ab", 32), Reason: "serial-has-other-ek", ConflictDeviceID: "dev-original",
		Attempts: 7, FirstSeen: first, LastSeen: first.Add(90 * time.Minute), Status: "held",
	}
	var mu sync.Mutex
	var asked []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.Method+" "+r.URL.RequestURI())
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/v1/admin/devices":
			json.NewEncoder(w).Encode(wire.DeviceList{Devices: []wire.Device{}, Quarantined: []wire.QuarantinedClaim{held}, Next: held.ID})
		case r.Method == http.MethodPost && r.URL.Path == "/v1/admin/quarantine/"+held.ID+"/release":
			var req wire.ReleaseRequest
			json.NewDecoder(r.Body).Decode(&req)
			mu.Lock()
			asked = append(asked, "reason="+req.Reason)
			mu.Unlock()
			d := held
			now := first.Add(2 * time.Hour)
			d.Status, d.ReleasedBy, d.ReleasedAt = "released", "admin:admin", &now
			json.NewEncoder(w).Encode(wire.ReleaseResponse{
				Claim:  d,
				Device: wire.Device{ID: "dev-original", Serial: held.Serial, Status: "active"},
				Certificates: []wire.RevokedCertificate{{Serial: "0abc", DeviceID: "dev-original", RevokedAt: now,
					Reason: req.Reason, ReasonCode: 4}},
				CRLNumber: 12,
			})
		case r.Method == http.MethodPost && r.URL.Path == "/v1/admin/quarantine/"+held.ID+"/dismiss":
			d := held
			now := first.Add(2 * time.Hour)
			d.Status, d.DismissedBy, d.DismissedAt = "dismissed", "admin:admin", &now
			json.NewEncoder(w).Encode(d)
		default:
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(wire.Problem{Type: wire.ProblemTypePrefix + "not-found", Title: "Not found", Status: 404,
				Detail: "no quarantined claim in your tenant"})
		}
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	defer srv.Close()
	// The init certificate names 127.0.0.1 and localhost.
	caURL := strings.Replace(srv.URL, "https://127.0.0.1", "https://localhost", 1)
	admin := []string{"--config", cfgPath, "--ca", caURL}

	var out, errOut bytes.Buffer
	if err := run(ctx, append([]string{"devices", "list", "--status", "quarantined", "--serial", "SN-CLONE-1"}, admin...), &out, &errOut); err != nil {
		t.Fatalf("devices list --status quarantined: %v (%s)", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "ID STATUS SERIAL MACS REASON CONFLICTS WITH COUNT FIRST SEEN LAST SEEN EK HASH / IDEVID" {
		t.Fatalf("table:\n%s", out.String())
	}
	want := []string{"0192-q1", "held", "SN-CLONE-1", "020000000001,020000000002", "serial-has-other-ek", "dev-original", "7",
		"2026-11-01T10:00:00Z", "2026-11-01T11:30:00Z", held.EKHash}
	if got := strings.Fields(lines[1]); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("row %q, want %q", got, want)
	}
	if !strings.Contains(errOut.String(), "more: --after 0192-q1") {
		t.Errorf("stderr %q: want the next-page hint", errOut.String())
	}

	out.Reset()
	if err := run(ctx, append([]string{"devices", "list", "--status", "quarantined", "--output", "json"}, admin...), &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	var l wire.DeviceList
	if err := json.Unmarshal(out.Bytes(), &l); err != nil || len(l.Quarantined) != 1 || l.Quarantined[0].Attempts != 7 {
		t.Fatalf("json: %+v, %v\n%s", l, err, out.String())
	}

	if err := run(ctx, append([]string{"devices", "list", "--status", "quarantined", "--all"}, admin...), &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, []string{"devices", "list", "--all"}, &bytes.Buffer{}, &bytes.Buffer{}); !errors.Is(err, errUsage) {
		t.Errorf("--all without --status quarantined: %v, want a usage error", err)
	}

	out.Reset()
	if err := run(ctx, append([]string{"devices", "release", held.ID}, admin...), &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "claim 0192-q1 released by admin:admin") || !strings.Contains(s, "keeps its id") ||
		!strings.Contains(s, "0abc  superseded") || !strings.Contains(s, "CRL 12 lists them") {
		t.Fatalf("release said %q", s)
	}
	if err := run(ctx, append([]string{"devices", "release", held.ID, "--reason", "keyCompromise"}, admin...), &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	err = run(ctx, append([]string{"devices", "release", "nope"}, admin...), &bytes.Buffer{}, &bytes.Buffer{})
	if re := (*client.ResponseError)(nil); !errors.As(err, &re) || re.StatusCode != http.StatusNotFound {
		t.Fatalf("release unknown: %v, want a 404", err)
	}

	out.Reset()
	if err := run(ctx, append([]string{"devices", "dismiss", held.ID}, admin...), &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "claim 0192-q1") || !strings.Contains(s, "dismissed by admin:admin") || !strings.Contains(s, "stays refused") {
		t.Fatalf("dismiss said %q", s)
	}
	err = run(ctx, append([]string{"devices", "dismiss", "nope"}, admin...), &bytes.Buffer{}, &bytes.Buffer{})
	var re *client.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusNotFound {
		t.Fatalf("dismiss unknown: %v, want a 404", err)
	}

	mu.Lock()
	defer mu.Unlock()
	wantAsked := []string{
		"GET /v1/admin/devices?limit=100&serial=SN-CLONE-1&status=quarantined",
		"GET /v1/admin/devices?limit=100&status=quarantined",
		"GET /v1/admin/devices?all=true&limit=100&status=quarantined",
		"POST /v1/admin/quarantine/0192-q1/release",
		"reason=superseded",
		"POST /v1/admin/quarantine/0192-q1/release",
		"reason=keyCompromise",
		"POST /v1/admin/quarantine/nope/release",
		"POST /v1/admin/quarantine/0192-q1/dismiss",
		"POST /v1/admin/quarantine/nope/dismiss",
	}
	if strings.Join(asked, "\n") != strings.Join(wantAsked, "\n") {
		t.Fatalf("requests:\n%s\nwant:\n%s", strings.Join(asked, "\n"), strings.Join(wantAsked, "\n"))
	}

	// Usage: the id is required, once; help explains what each command does.
	for _, args := range [][]string{{"devices", "dismiss"}, {"devices", "dismiss", "a", "b"}, {"devices", "dismiss", "a"},
		{"devices", "release"}, {"devices", "release", "a", "b"}, {"devices", "release", "a"}} {
		if err := run(ctx, args, &bytes.Buffer{}, &bytes.Buffer{}); !errors.Is(err, errUsage) {
			t.Errorf("ca %s: %v, want a usage error", strings.Join(args, " "), err)
		}
	}
	var help bytes.Buffer
	if err := run(ctx, []string{"devices", "dismiss", "-h"}, &bytes.Buffer{}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("dismiss -h: %v", err)
	}
	if !strings.Contains(help.String(), "admits no one") || !strings.Contains(help.String(), "ca devices revoke") ||
		!strings.Contains(help.String(), "ca devices release") {
		t.Errorf("dismiss help:\n%s", help.String())
	}
	help.Reset()
	if err := run(ctx, []string{"devices", "release", "-h"}, &bytes.Buffer{}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("release -h: %v", err)
	}
	for _, want := range []string{"Lets in the device with the TPM", "previous identity is revoked", "keeps its device id",
		"enrolls as a new device", "-reason"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("release help lacks %q:\n%s", want, help.String())
		}
	}
}
