package sqlstore

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"gorm.io/gorm"

	"devpki/pkg/registry"
)

// TestAuditTamper edits the stored chain behind the store's back.
func TestAuditTamper(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sql    string
		wantAt string
	}{
		{"edit detail", "UPDATE audit_events SET detail = 'forged' WHERE seq = 3", "event 3:"},
		{"edit time", "UPDATE audit_events SET time = ? WHERE seq = 2", "event 2:"},
		{"delete middle", "DELETE FROM audit_events WHERE seq = 3", "event 3:"},
		{"delete last", "DELETE FROM audit_events WHERE seq = 5", "event 5:"},
		{"reorder", "UPDATE audit_events SET seq = seq + 100 WHERE seq = 4", "event 4:"},
		// Event 3 edited and its global hash recomputed: its tenant hash no
		// longer matches; with both recomputed, event 4 no longer chains.
		{"rehash edited", "", "event 3: tenant default chain"},
		{"rehash both edited", "", "event 4:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSQLite(t)
			ctx := context.Background()
			for i := range 5 {
				if err := s.AppendAudit(ctx, &registry.AuditEvent{Actor: "system", Action: "seed", Detail: strings.Repeat("x", i)}); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.VerifyAudit(ctx); err != nil {
				t.Fatalf("VerifyAudit before tampering: %v", err)
			}
			var err error
			switch {
			case tc.sql == "":
				evs, lerr := s.ListAudit(ctx, 2, 1)
				if lerr != nil {
					t.Fatal(lerr)
				}
				ev := evs[0]
				ev.Detail = "forged"
				th := ev.TenantHash
				if tc.name == "rehash both edited" {
					th = registry.AuditTenantHash(ev.TenantPrevHash, ev)
				}
				err = s.w.Exec("UPDATE audit_events SET detail = ?, hash = ?, tenant_hash = ? WHERE seq = 3", ev.Detail,
					registry.AuditHash(ev.PrevHash, ev), th).Error
			case strings.Contains(tc.sql, "?"):
				err = s.w.Exec(tc.sql, "2001-01-01 00:00:00+00:00").Error
			default:
				err = s.w.Exec(tc.sql).Error
			}
			if err != nil {
				t.Fatalf("tamper: %v", err)
			}
			err = s.VerifyAudit(ctx)
			if !errors.Is(err, registry.ErrAuditChain) || !strings.Contains(err.Error(), tc.wantAt) {
				t.Fatalf("VerifyAudit = %v, want ErrAuditChain naming %q", err, tc.wantAt)
			}
		})
	}
}

// TestFaultInBatch: one enrollment of a group-commit batch hits an injected
// database error; it alone fails and leaves nothing, the others commit.
func TestFaultInBatch(t *testing.T) {
	s := newSQLite(t)
	ctx := context.Background()
	err := s.w.Exec(`CREATE TRIGGER inject_fault BEFORE INSERT ON certificates
		WHEN NEW.subject LIKE '%FAULT%' BEGIN SELECT RAISE(ABORT, 'injected'); END`).Error
	if err != nil {
		t.Fatal(err)
	}
	badTok := mustToken(t, s, "tok-bad", 1)
	goodTok := mustToken(t, s, "tok-good", 1)
	nAudit := func() int {
		evs, err := s.ListAudit(ctx, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		return len(evs)
	}
	before := nAudit()

	// Alone.
	bad := enrollment("SN-FAULT", badTok)
	bad.Certificate.Subject = "CN=FAULT"
	if err := s.Enroll(ctx, bad); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("Enroll = %v, want the injected error", err)
	}

	// In one batch with good writes.
	release := blockCommitter(t, s, nil)
	b0, o0 := s.BatchStats()
	bad = enrollment("SN-FAULT", badTok)
	bad.Certificate.Subject = "CN=FAULT"
	good := enrollment("SN-GOOD", goodTok)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i, fn := range []func() error{
		func() error { return s.Enroll(ctx, bad) },
		func() error { return s.Enroll(ctx, good) },
		func() error { return s.AppendAudit(ctx, &registry.AuditEvent{Actor: "system", Action: "bystander"}) },
	} {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = fn() }()
	}
	waitQueued(t, s, 3)
	release()
	wg.Wait()
	if b1, o1 := s.BatchStats(); b1-b0 != 1 || o1-o0 != 3 {
		t.Errorf("writes ran in %d batches carrying %d ops, want 1 batch of 3", b1-b0, o1-o0)
	}

	if errs[0] == nil || !strings.Contains(errs[0].Error(), "injected") {
		t.Errorf("faulty Enroll = %v, want the injected error", errs[0])
	}
	if errs[1] != nil || errs[2] != nil {
		t.Fatalf("good writes in the same batch failed: %v, %v", errs[1], errs[2])
	}
	if tok, err := s.GetToken(ctx, badTok); err != nil || tok.UsesLeft != 1 {
		t.Errorf("faulty enrollment's token: %+v, %v; want 1 use left", tok, err)
	}
	if _, err := s.GetDeviceBySerial(ctx, registry.DefaultTenant, "SN-FAULT"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("faulty enrollment wrote its device: %v", err)
	}
	if _, err := s.GetDeviceBySerial(ctx, registry.DefaultTenant, "SN-GOOD"); err != nil {
		t.Errorf("good enrollment's device: %v", err)
	}
	if tok, err := s.GetToken(ctx, goodTok); err != nil || tok.UsesLeft != 0 {
		t.Errorf("good enrollment's token: %+v, %v; want spent", tok, err)
	}
	if got := nAudit(); got != before+2 {
		t.Errorf("audit events: %d new, want 2 (good enroll, bystander)", got-before)
	}
	evs, _ := s.ListAudit(ctx, 0, 1000)
	for _, ev := range evs {
		if ev.Target == bad.Device.ID {
			t.Errorf("audit event of the faulty enrollment was written: %+v", ev)
		}
	}
	if err := s.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestCommitFailure: when the batch's COMMIT fails, every write of the batch
// gets an error and none is applied; the store keeps working afterwards.
func TestCommitFailure(t *testing.T) {
	s := newSQLite(t)
	ctx := context.Background()
	// A deferred foreign key violation is only detected at COMMIT.
	for _, q := range []string{
		`CREATE TABLE poison_target (id INTEGER PRIMARY KEY)`,
		`CREATE TABLE poison (x INTEGER REFERENCES poison_target(id) DEFERRABLE INITIALLY DEFERRED)`,
		`CREATE TRIGGER poison_audit AFTER INSERT ON audit_events WHEN NEW.detail = 'poison'
			BEGIN INSERT INTO poison VALUES (42); END`,
	} {
		if err := s.w.Exec(q).Error; err != nil {
			t.Fatal(err)
		}
	}
	tok := mustToken(t, s, "tok-commit", 1)

	release := blockCommitter(t, s, nil)
	e := enrollment("SN-COMMIT", tok)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i, fn := range []func() error{
		func() error { return s.Enroll(ctx, e) },
		func() error { return s.AppendAudit(ctx, &registry.AuditEvent{Actor: "system", Detail: "poison"}) },
		func() error { return s.AppendAudit(ctx, &registry.AuditEvent{Actor: "system", Detail: "innocent"}) },
	} {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = fn() }()
	}
	waitQueued(t, s, 3)
	release()
	wg.Wait()
	for i, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "commit") {
			t.Errorf("write %d: %v, want a commit error", i, err)
		}
	}
	if _, err := s.GetDeviceBySerial(ctx, registry.DefaultTenant, "SN-COMMIT"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("device written by a failed commit: %v", err)
	}
	if got, _ := s.GetToken(ctx, tok); got.UsesLeft != 1 {
		t.Errorf("token spent by a failed commit: %d uses left", got.UsesLeft)
	}
	if evs, _ := s.ListAudit(ctx, 0, 100); len(evs) != 0 {
		t.Errorf("%d audit events written by a failed commit", len(evs))
	}
	// The writer connection is usable again.
	if err := s.Enroll(ctx, enrollment("SN-COMMIT", tok)); err != nil {
		t.Fatalf("Enroll after failed commit: %v", err)
	}
	if err := s.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestCloseDrains: writes queued when Close is called are still applied and
// answered.
func TestCloseDrains(t *testing.T) {
	path := t.TempDir() + "/r.db"
	s := openSQLite(t, path)
	ctx := context.Background()
	release := blockCommitter(t, s, nil)
	const n = 10
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.AppendAudit(ctx, &registry.AuditEvent{Actor: "system", Action: "drain"})
		}()
	}
	waitQueued(t, s, n)
	closed := make(chan error)
	go func() { closed <- s.Close() }()
	release()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("queued write %d: %v", i, err)
		}
	}
	s = openSQLite(t, path)
	defer s.Close()
	if evs, err := s.ListAudit(ctx, 0, 100); err != nil || len(evs) != n {
		t.Fatalf("after reopen: %d events, %v; want %d", len(evs), err, n)
	}
	if err := s.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestCancelWhileQueued: a write whose context ends while it waits behind a
// busy committer returns the context's error and is never applied.
func TestCancelWhileQueued(t *testing.T) {
	s := newSQLite(t)
	tok := mustToken(t, s, "tok-cancel", 1)
	release := blockCommitter(t, s, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Enroll(ctx, enrollment("SN-CANCEL", tok)) }()
	waitQueued(t, s, 1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Enroll = %v, want context.Canceled", err)
	}
	release()
	// A later write is answered only after the abandoned one would have run.
	if err := s.AppendAudit(context.Background(), &registry.AuditEvent{Actor: "system"}); err != nil {
		t.Fatal(err)
	}
	bg := context.Background()
	if _, err := s.GetDeviceBySerial(bg, registry.DefaultTenant, "SN-CANCEL"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("cancelled enrollment was applied: %v", err)
	}
	if got, _ := s.GetToken(bg, tok); got.UsesLeft != 1 {
		t.Errorf("cancelled enrollment spent the token: %d uses left", got.UsesLeft)
	}
}

// TestFailedOpUndoesTenantHead: an op of a batch that appended an audit
// event and then failed leaves the batch's tenant chain head where it was,
// so the next event of that tenant in the same batch links to the last
// committed one, and the stored head is that event's.
func TestFailedOpUndoesTenantHead(t *testing.T) {
	s := newSQLite(t)
	ctx := context.Background()
	ev := func(action string) *registry.AuditEvent {
		return &registry.AuditEvent{TenantID: registry.DefaultTenant, Actor: "system", Action: action}
	}
	boom := errors.New("boom after the audit event")
	release := blockCommitter(t, s, nil)
	b0, _ := s.BatchStats()
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i, fn := range []func() error{
		func() error { return s.AppendAudit(ctx, ev("first")) },
		func() error {
			return s.write(ctx, func(_ *gorm.DB, b *batch) error {
				if _, err := b.appendAudit(ev("failing")); err != nil {
					return err
				}
				return boom
			})
		},
		func() error { return s.AppendAudit(ctx, ev("last")) },
	} {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = fn() }()
	}
	waitQueued(t, s, 3)
	release()
	wg.Wait()
	if b1, _ := s.BatchStats(); b1-b0 != 1 {
		t.Fatalf("the ops ran in %d batches, want 1", b1-b0)
	}
	if errs[0] != nil || !errors.Is(errs[1], boom) || errs[2] != nil {
		t.Fatalf("results %v", errs)
	}
	if err := s.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
	var head auditTenantHeadRow
	if err := s.r.Where("tenant_id = ?", registry.AuditChain(registry.DefaultTenant)).Take(&head).Error; err != nil {
		t.Fatal(err)
	}
	var last auditRow
	if err := s.r.Where("tenant_id = ?", registry.DefaultTenant).Order("seq DESC").Take(&last).Error; err != nil {
		t.Fatal(err)
	}
	if last.Action == "failing" || head.Seq != last.TenantSeq || !bytes.Equal(head.Hash, last.TenantHash) {
		t.Fatalf("tenant head %d %x, last event %q %d %x", head.Seq, head.Hash, last.Action, last.TenantSeq, last.TenantHash)
	}
}
