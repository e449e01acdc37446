package sqlstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// TestAuditUpgrade: a registry written before tenant chains existed (events
// without tenant_seq, tenant_prev_hash, tenant_hash; no tenant heads) keeps
// verifying once opened by this code, which backfills the tenant chains;
// new events continue them.
func TestAuditUpgrade(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "old.db")
		s := openSQLite(t, path)
		seedOldAudit(t, s)
		s.Close()
		s = openSQLite(t, path)
		defer s.Close()
		checkUpgraded(t, s)
	})
	t.Run("postgres", func(t *testing.T) {
		a := newPostgres(t)
		seedOldAudit(t, a)
		var schema string
		if err := a.r.Raw("SELECT current_schema()").Scan(&schema).Error; err != nil {
			t.Fatal(err)
		}
		a.Close()
		b, err := Open(context.Background(), Options{Driver: DriverPostgres, DSN: pgDSN(t) + " search_path=" + schema})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		checkUpgraded(t, b)
	})
}

// seedOldAudit turns s's audit tables into the schema before tenant chains
// and writes events the way that code did (raw SQL, global chain only).
func seedOldAudit(t *testing.T, s *Store) {
	t.Helper()
	asLegacy(t, s)
	for _, q := range []string{
		"DROP TABLE audit_tenant_heads",
		"ALTER TABLE audit_events DROP COLUMN tenant_seq",
		"ALTER TABLE audit_events DROP COLUMN tenant_prev_hash",
		"ALTER TABLE audit_events DROP COLUMN tenant_hash",
	} {
		if err := s.w.Exec(q).Error; err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	prev := make([]byte, sha256.Size)
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Microsecond)
	for i, tenant := range []string{"", "t-acme", registry.DefaultTenant, "t-acme", ""} {
		ev := &registry.AuditEvent{Seq: int64(i + 1), Time: base.Add(time.Duration(i) * time.Second), TenantID: tenant,
			Actor: "admin:old", Action: "seed", Target: fmt.Sprint(i), Result: registry.ResultOK, SourceAddr: "192.0.2.9"}
		ev.Hash = registry.AuditHash(prev, ev)
		err := s.w.Exec(`INSERT INTO audit_events (seq, time, tenant_id, actor, action, target, result, detail, source_addr, prev_hash, hash)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, ev.Seq, ev.Time, ev.TenantID, ev.Actor, ev.Action, ev.Target, ev.Result,
			ev.Detail, ev.SourceAddr, prev, ev.Hash).Error
		if err != nil {
			t.Fatal(err)
		}
		prev = ev.Hash
	}
	if err := s.w.Exec("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", 5, prev).Error; err != nil {
		t.Fatal(err)
	}
}

func checkUpgraded(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	if err := s.VerifyAudit(ctx); err != nil {
		t.Fatalf("VerifyAudit after upgrade: %v", err)
	}
	evs, err := s.ListAuditEvents(ctx, registry.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	want := []int64{1, 1, 2, 2, 3} // default, acme, default, acme, default
	for i, ev := range evs {
		if ev.TenantSeq != want[i] {
			t.Errorf("event %d: tenant seq %d, want %d", ev.Seq, ev.TenantSeq, want[i])
		}
	}
	// New events continue both chains; each tenant's export verifies.
	for _, tenant := range []string{"t-acme", ""} {
		if err := s.AppendAudit(ctx, &registry.AuditEvent{TenantID: tenant, Actor: "admin:new", Action: "after", Result: registry.ResultOK}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.VerifyAudit(ctx); err != nil {
		t.Fatalf("VerifyAudit after new events: %v", err)
	}
	for _, tenant := range []string{"", "t-acme", registry.DefaultTenant} {
		evs, err := s.ListAuditEvents(ctx, registry.AuditFilter{TenantID: tenant})
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		h := registry.ExportHeader{}
		if tenant != "" {
			h.Scope, h.Tenant = registry.ScopeTenant, tenant
		}
		x, err := registry.NewExportWriter(&buf, h)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if err := x.Event(ev); err != nil {
				t.Fatal(err)
			}
		}
		if err := x.Close(); err != nil {
			t.Fatal(err)
		}
		if rep, err := registry.VerifyExport(&buf, nil); err != nil || rep.Anchor != "genesis" {
			t.Errorf("export of tenant %q after upgrade: %+v, %v", tenant, rep, err)
		}
	}
}

// TestRefusalsBounded: 5,000 anonymous refusals from many sources leave
// at most the cap of aggregate rows (oldest dropped) and no chained event;
// from one source they are one row per minute.
func TestRefusalsBounded(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Options{DSN: filepath.Join(t.TempDir(), "r.db"), MaxRefusals: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base := time.Now().UTC().Truncate(time.Minute)
	const n = 5000
	errs := make(chan error, 8)
	for w := range 8 {
		go func() {
			var err error
			for i := w; i < n && err == nil; i += 8 {
				// Sources cycle over 1,000 addresses, so most refusals make a
				// new row: the cap, not aggregation, bounds these.
				err = s.RecordRefusal(ctx, &registry.Refusal{SourceAddr: fmt.Sprintf("198.51.%d.%d", i%1000/250, i%250),
					Action: "enroll", Reason: "token-invalid", Last: base.Add(time.Duration(i) * time.Millisecond * 6), Sample: "x"})
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	var rows, hits int64
	if err := s.r.Model(&refusalRow{}).Count(&rows).Error; err != nil {
		t.Fatal(err)
	}
	if rows != 100 {
		t.Fatalf("%d refusal rows, want the cap, 100", rows)
	}
	if err := s.r.Model(&refusalRow{}).Select("COALESCE(SUM(hits), 0)").Scan(&hits).Error; err != nil {
		t.Fatal(err)
	}
	var newest refusalRow
	if err := s.r.Order("id DESC").Take(&newest).Error; err != nil {
		t.Fatal(err)
	}
	if !newest.LastAt.After(base.Add(20 * time.Second)) {
		t.Errorf("newest aggregate %+v: the oldest should have been dropped", newest)
	}
	evs, err := s.ListAudit(ctx, 0, 10)
	if err != nil || len(evs) != 0 {
		t.Fatalf("refusals appended chained events: %d, %v", len(evs), err)
	}
	t.Logf("%d refusals: %d rows (cap 100) counting %d", n, rows, hits)

	// One source hammering for a minute: one row.
	s2 := newSQLite(t)
	for i := range 2000 {
		if err := s2.RecordRefusal(ctx, &registry.Refusal{SourceAddr: "203.0.113.5", Action: "enroll", Reason: "token-invalid",
			Last: base.Add(time.Duration(i) * 20 * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := s2.ListRefusals(ctx, 0, 10)
	if err != nil || len(rs) != 1 || rs[0].Count != 2000 {
		t.Fatalf("one source, one minute: %+v, %v; want one row counting 2000", rs, err)
	}
}
