package registry_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// chain builds n events over two tenants the way a store chains them.
func chain(n int) []*registry.AuditEvent {
	prev := make([]byte, sha256.Size)
	tenants := map[string]*registry.AuditEvent{}
	base := time.Date(2026, 11, 30, 12, 0, 0, 123456000, time.UTC)
	var evs []*registry.AuditEvent
	for i := range n {
		tenant := []string{"", "t-acme", registry.DefaultTenant}[i%3]
		ev := &registry.AuditEvent{Seq: int64(i + 1), Time: base.Add(time.Duration(i) * time.Second), TenantID: tenant,
			Actor: "admin:alice", Action: "token.create", Target: fmt.Sprintf("tok-%d", i), Result: registry.ResultOK,
			Detail: "uses=1", SourceAddr: "192.0.2.1", PrevHash: prev}
		ev.Hash = registry.AuditHash(prev, ev)
		prev = ev.Hash
		chainID := registry.AuditChain(tenant)
		ev.TenantSeq, ev.TenantPrevHash = 1, make([]byte, sha256.Size)
		if last := tenants[chainID]; last != nil {
			ev.TenantSeq, ev.TenantPrevHash = last.TenantSeq+1, last.TenantHash
		}
		ev.TenantHash = registry.AuditTenantHash(ev.TenantPrevHash, ev)
		tenants[chainID] = ev
		evs = append(evs, ev)
	}
	return evs
}

func export(t *testing.T, evs []*registry.AuditEvent, h registry.ExportHeader) []string {
	t.Helper()
	var buf bytes.Buffer
	x, err := registry.NewExportWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if h.Scope == registry.ScopeTenant && registry.AuditChain(ev.TenantID) != h.Tenant {
			continue
		}
		if err := x.Event(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
}

func verify(lines []string) (*registry.ExportReport, error) {
	return registry.VerifyExport(strings.NewReader(strings.Join(lines, "\n")+"\n"), nil)
}

// forge is line i rewritten as an event with the previous line's hash as
// its previous hash and a correct hash of its own: what an editor who knows
// the format can do without a key.
func forge(t *testing.T, lines []string, prevLine int, seq int64, detail string) string {
	t.Helper()
	var prev registry.ExportEvent
	if err := jsonUnmarshal(lines[prevLine], &prev); err != nil {
		t.Fatal(err)
	}
	ev := &registry.AuditEvent{Seq: seq, Time: time.Date(2026, 11, 30, 13, 0, 0, 0, time.UTC), Actor: "admin:mallory",
		Action: "device.reinstate", Result: registry.ResultOK, Detail: detail}
	ev.PrevHash = mustHex(t, prev.Hash)
	ev.Hash = registry.AuditHash(ev.PrevHash, ev)
	// Its tenant (the default's) chain continues too, from the last
	// default-tenant line before it.
	ev.TenantSeq, ev.TenantPrevHash = 1, make([]byte, sha256.Size)
	for _, l := range lines[1 : prevLine+1] {
		var e registry.ExportEvent
		if err := jsonUnmarshal(l, &e); err != nil {
			t.Fatal(err)
		}
		if registry.AuditChain(e.TenantID) == registry.DefaultTenant {
			ev.TenantSeq, ev.TenantPrevHash = e.TenantSeq+1, mustHex(t, e.TenantHash)
		}
	}
	ev.TenantHash = registry.AuditTenantHash(ev.TenantPrevHash, ev)
	return mustJSON(t, registry.ExportEventOf(ev))
}

// TestExportTamper: each edit of a global export is found and named at the
// right line (line 1 is the header, line k+1 the k-th event).
func TestExportTamper(t *testing.T) {
	evs := chain(9)
	good := export(t, evs, registry.ExportHeader{})
	if rep, err := verify(good); err != nil || rep.Events != 9 || rep.Anchor != "genesis" || rep.LastSeq != 9 {
		t.Fatalf("untouched export: %+v, %v", rep, err)
	}
	edit := func(f func(l []string) []string) []string { return f(append([]string(nil), good...)) }
	for _, tc := range []struct {
		name     string
		lines    []string
		wantLine int
		wantText string
	}{
		{"edit a field", edit(func(l []string) []string {
			l[4] = strings.Replace(l[4], `"detail":"uses=1"`, `"detail":"uses=9"`, 1)
			return l
		}), 5, "edited"},
		{"edit the time", edit(func(l []string) []string {
			l[3] = strings.Replace(l[3], "12:00:02", "12:00:03", 1)
			return l
		}), 4, "edited"},
		{"delete a line", edit(func(l []string) []string { return append(l[:4], l[5:]...) }), 5, "deleted"},
		{"delete the first event", edit(func(l []string) []string { return append(l[:1], l[2:]...) }), 2, "deleted"},
		{"reorder two lines", edit(func(l []string) []string { l[4], l[5] = l[5], l[4]; return l }), 5, "reordered"},
		{"insert a forged line", edit(func(l []string) []string {
			return append(l[:5], append([]string{forge(t, l, 4, 5, "forged")}, l[5:]...)...)
		}), 6, "inserted"},
		{"replace a line by a forgery", edit(func(l []string) []string { l[5] = forge(t, l, 4, 5, "forged"); return l }), 7, "replaced"},
		{"duplicate a line", edit(func(l []string) []string { return append(l[:5], append([]string{l[4]}, l[5:]...)...) }), 6, "repeated"},
		{"truncate: end line gone", edit(func(l []string) []string { return l[:len(l)-1] }), 11, "truncated"},
		{"truncate mid-line", edit(func(l []string) []string { l = l[:8]; l[7] = l[7][:40]; return l }), 8, "truncated"},
		{"truncate and forge the end line", edit(func(l []string) []string {
			return append(l[:7], `{"type":"end","events":9,"last_seq":9,"last_hash":"00"}`)
		}), 8, "counts 9 events"},
		{"header gone", edit(func(l []string) []string { return l[1:] }), 1, "header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := verify(tc.lines)
			var le *registry.ExportLineError
			if !errors.As(err, &le) || !errors.Is(err, registry.ErrAuditChain) {
				t.Fatalf("VerifyExport = %+v, %v; want an ExportLineError", rep, err)
			}
			if le.Line != tc.wantLine || !strings.Contains(le.Reason, tc.wantText) {
				t.Errorf("VerifyExport: %v; want line %d mentioning %q", err, tc.wantLine, tc.wantText)
			}
		})
	}
}

// TestTenantExport: one tenant's events verify on their own chain; an edit,
// a deletion or another tenant's line is found at its line.
func TestTenantExport(t *testing.T) {
	evs := chain(12)
	good := export(t, evs, registry.ExportHeader{Scope: registry.ScopeTenant, Tenant: "t-acme"})
	if rep, err := verify(good); err != nil || rep.Events != 4 || rep.Anchor != "genesis" || rep.LastSeq != 4 {
		t.Fatalf("tenant export: %+v, %v", rep, err)
	}
	def := export(t, evs, registry.ExportHeader{Scope: registry.ScopeTenant, Tenant: registry.DefaultTenant})
	if rep, err := verify(def); err != nil || rep.Events != 8 {
		t.Fatalf("default tenant export (events with no tenant and the default's): %+v, %v", rep, err)
	}
	edited := append([]string(nil), good...)
	edited[3] = strings.Replace(edited[3], "admin:alice", "admin:alicf", 1)
	deleted := append(append([]string(nil), good[:2]...), good[3:]...)
	foreign := append(append([]string(nil), good[:3]...), append([]string{def[2]}, good[3:]...)...)
	for _, tc := range []struct {
		name  string
		lines []string
		line  int
		text  string
	}{
		{"edit", edited, 4, "edited"},
		{"delete", deleted, 3, "deleted"},
		{"another tenant's line", foreign, 4, "belongs to tenant"},
	} {
		_, err := verify(tc.lines)
		var le *registry.ExportLineError
		if !errors.As(err, &le) || le.Line != tc.line || !strings.Contains(le.Reason, tc.text) {
			t.Errorf("%s: %v; want line %d mentioning %q", tc.name, err, tc.line, tc.text)
		}
	}
	// Claiming a tenant export is global does not help: the global chain
	// has gaps.
	global := append([]string(nil), good...)
	global[0] = strings.Replace(global[0], `"scope":"tenant","tenant":"t-acme"`, `"scope":"global"`, 1)
	if _, err := verify(global); err == nil {
		t.Error("a tenant export relabelled global verified")
	}
}

// TestSinceExport: an export from the middle verifies from its first
// event's recorded previous hash, and says so.
func TestSinceExport(t *testing.T) {
	evs := chain(9)
	lines := export(t, evs[4:], registry.ExportHeader{Since: evs[4].Time.Format(time.RFC3339Nano)})
	rep, err := verify(lines)
	if err != nil || rep.Anchor != "first event" || rep.FirstSeq != 5 {
		t.Fatalf("since export: %+v, %v", rep, err)
	}
	// Without --since in the header the same lines are missing events.
	noSince := export(t, evs[4:], registry.ExportHeader{})
	if _, err := verify(noSince); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("mid-chain export without since: %v, want line 2 named", err)
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
