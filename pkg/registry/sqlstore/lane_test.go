package sqlstore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"devpki/pkg/registry"
)

// batchSizes records the size of every group-commit transaction, in order.
type batchSizes struct {
	mu    sync.Mutex
	sizes []int
}

func (b *batchSizes) Committed(writes int, _ time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sizes = append(b.sizes, writes)
}

func (b *batchSizes) get() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]int(nil), b.sizes...)
}

// laneStores are the stores the admin-lane tests run on: SQLite, and
// PostgreSQL when DEVPKI_TEST_POSTGRES_DSN is set (its pools differ).
func laneStores(t *testing.T, opts Options, run func(t *testing.T, s *Store)) {
	t.Run("sqlite", func(t *testing.T) {
		o := opts
		o.DSN = t.TempDir() + "/registry.db"
		s, err := Open(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		run(t, s)
	})
	t.Run("postgres", func(t *testing.T) {
		pgDSN(t)
		base := newPostgres(t)
		var schema string
		if err := base.r.Raw("SELECT current_schema()").Scan(&schema).Error; err != nil {
			t.Fatal(err)
		}
		o := opts
		o.Driver, o.DSN = DriverPostgres, pgDSN(t)+" search_path="+schema
		s, err := Open(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		run(t, s)
	})
}

// TestAdminLaneCommitsAheadOfQueuedWrites fills the device lane behind a
// blocked committer, then queues one admin-lane audit append: it commits in
// a transaction of its own before any of the device writes queued ahead of
// it, and stays on the one audit chain.
func TestAdminLaneCommitsAheadOfQueuedWrites(t *testing.T) {
	rec := &batchSizes{}
	laneStores(t, Options{Observer: rec}, func(t *testing.T, s *Store) {
		ctx := context.Background()
		const devices = 20
		release := blockCommitter(t, s, nil)
		defer release()
		before := len(rec.get())

		devEvents := make([]*registry.AuditEvent, devices)
		errs := make(chan error, devices+1)
		for i := range devEvents {
			devEvents[i] = &registry.AuditEvent{TenantID: registry.DefaultTenant, Actor: fmt.Sprintf("device:%d", i), Action: "enroll", Result: registry.ResultOK}
			go func(ev *registry.AuditEvent) { errs <- s.AppendAudit(ctx, ev) }(devEvents[i])
		}
		waitQueued(t, s, devices)
		adminEv := &registry.AuditEvent{TenantID: registry.DefaultTenant, Actor: "admin:alice", Action: "admin.read", Target: "/v1/admin/devices/x", Result: registry.ResultOK}
		go func() { errs <- s.AppendAudit(registry.WithAdminLane(ctx), adminEv) }()
		waitLane(t, s, 1)
		if n := len(s.ops); n != devices {
			t.Fatalf("device lane holds %d writes, want %d: the admin write went there", n, devices)
		}

		release()
		for range devices + 1 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		for _, ev := range devEvents {
			if ev.Seq <= adminEv.Seq {
				t.Errorf("device event %s has seq %d, the admin event %d: the admin write waited behind it", ev.Actor, ev.Seq, adminEv.Seq)
			}
		}
		// The blocker's transaction, the admin write alone, then the devices.
		sizes := rec.get()[before:]
		if len(sizes) < 2 || sizes[0] != 1 || sizes[1] != 1 {
			t.Errorf("transactions after the blocker = %v, want [1 (blocker) 1 (admin) ...devices]", sizes)
		}
		got := 0
		for _, n := range sizes[2:] {
			got += n
		}
		if got != devices {
			t.Errorf("device writes committed after the admin's = %d, want %d (batches %v)", got, devices, sizes)
		}
		if err := s.VerifyAudit(ctx); err != nil {
			t.Errorf("audit chain after the admin lane: %v", err)
		}
		evs, err := s.ListAudit(ctx, adminEv.Seq-1, 1)
		if err != nil || len(evs) != 1 || evs[0].Action != "admin.read" || evs[0].Actor != "admin:alice" {
			t.Errorf("ListAudit at the admin event's seq = %+v, %v", evs, err)
		}
	})
}

// TestAdminLaneCutsRunningBatchShort: an admin write queued while a batch
// of device writes is running does not wait for the rest of that batch —
// the transaction commits the ops it ran, the admin write runs next, the
// rest of the batch after it — and every caller gets its answer.
func TestAdminLaneCutsRunningBatchShort(t *testing.T) {
	rec := &batchSizes{}
	laneStores(t, Options{Observer: rec, MaxBatchTime: -1}, func(t *testing.T, s *Store) {
		ctx := context.Background()
		const devices = 10
		release := blockCommitter(t, s, nil)
		before := len(rec.get())

		// The next batch: a first write that blocks mid-batch, then the devices.
		started, unblock := make(chan struct{}), make(chan struct{})
		firstEv := &registry.AuditEvent{TenantID: registry.DefaultTenant, Actor: "device:first", Action: "enroll", Result: registry.ResultOK}
		errs := make(chan error, devices+2)
		go func() {
			errs <- s.write(ctx, func(_ *gorm.DB, b *batch) error {
				ev, err := b.appendAudit(firstEv)
				if err == nil {
					firstEv.Seq = ev.Seq
				}
				close(started)
				<-unblock
				return err
			})
		}()
		waitQueued(t, s, 1)
		devEvents := make([]*registry.AuditEvent, devices)
		for i := range devEvents {
			devEvents[i] = &registry.AuditEvent{TenantID: registry.DefaultTenant, Actor: fmt.Sprintf("device:%d", i), Action: "enroll", Result: registry.ResultOK}
			go func(ev *registry.AuditEvent) { errs <- s.AppendAudit(ctx, ev) }(devEvents[i])
		}
		waitQueued(t, s, devices+1)
		release()
		<-started
		if n := len(s.ops); n != 0 {
			t.Fatalf("%d device writes left queued, want all %d in the running batch", n, devices)
		}
		adminEv := &registry.AuditEvent{TenantID: registry.DefaultTenant, Actor: "admin:alice", Action: "admin.read", Result: registry.ResultOK}
		go func() { errs <- s.AppendAudit(registry.WithAdminLane(ctx), adminEv) }()
		waitLane(t, s, 1)
		close(unblock)
		for range devices + 2 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if adminEv.Seq != firstEv.Seq+1 {
			t.Errorf("admin event seq %d, want %d: right after the write that was running", adminEv.Seq, firstEv.Seq+1)
		}
		for _, ev := range devEvents {
			if ev.Seq <= adminEv.Seq {
				t.Errorf("device event %s has seq %d, the admin event %d: the admin write waited for the batch", ev.Actor, ev.Seq, adminEv.Seq)
			}
		}
		sizes := rec.get()[before:]
		if want := []int{1, 1, 1, devices}; fmt.Sprint(sizes) != fmt.Sprint(want) {
			t.Errorf("transactions after the blocker = %v, want %v (blocker, running write, admin, rest of the batch)", sizes, want)
		}
		if err := s.VerifyAudit(ctx); err != nil {
			t.Errorf("audit chain: %v", err)
		}
	})
}

// TestAdminLaneEndsLinger: a busy committer lingers for more device writes
// (here for an hour); an admin write arriving meanwhile ends the wait and
// commits first.
func TestAdminLaneEndsLinger(t *testing.T) {
	s, err := Open(context.Background(), Options{DSN: t.TempDir() + "/registry.db", Linger: time.Hour, MaxBatchTime: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	ev := func(actor string) *registry.AuditEvent {
		return &registry.AuditEvent{TenantID: registry.DefaultTenant, Actor: actor, Action: "test", Result: registry.ResultOK}
	}
	// A batch of two, its first write held, makes the committer busy: it
	// lingers after the next batch, which the device write starts.
	release := blockCommitter(t, s, nil)
	started, unblock := make(chan struct{}), make(chan struct{})
	errs := make(chan error, 4)
	go func() {
		errs <- s.write(ctx, func(_ *gorm.DB, b *batch) error {
			close(started)
			<-unblock
			_, err := b.appendAudit(ev("device:a"))
			return err
		})
	}()
	waitQueued(t, s, 1)
	go func() { errs <- s.AppendAudit(ctx, ev("device:b")) }()
	waitQueued(t, s, 2)
	release()
	<-started
	dev, adm := ev("device:c"), ev("admin:alice")
	go func() { errs <- s.AppendAudit(ctx, dev) }()
	waitQueued(t, s, 1)
	close(unblock)
	for len(s.ops) > 0 { // until the committer took the device write, and lingers
		time.Sleep(time.Millisecond)
	}
	go func() { errs <- s.AppendAudit(registry.WithAdminLane(ctx), adm) }()
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if adm.Seq >= dev.Seq {
		t.Errorf("admin event seq %d, device event %d: the admin write waited for the lingering batch", adm.Seq, dev.Seq)
	}
}

// TestAdminLaneDrainedOnClose: an admin write queued when Close starts is
// committed, not dropped.
func TestAdminLaneDrainedOnClose(t *testing.T) {
	s, err := Open(context.Background(), Options{DSN: t.TempDir() + "/registry.db"})
	if err != nil {
		t.Fatal(err)
	}
	release := blockCommitter(t, s, nil)
	ev := &registry.AuditEvent{TenantID: registry.DefaultTenant, Actor: "admin:alice", Action: "admin.read", Result: registry.ResultOK}
	done := make(chan error, 1)
	go func() { done <- s.AppendAudit(registry.WithAdminLane(context.Background()), ev) }()
	waitLane(t, s, 1)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	release()
	if err := <-done; err != nil {
		t.Fatalf("admin write queued before Close: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if ev.Seq == 0 {
		t.Error("the admin write was answered without a sequence number")
	}
	if err := s.AppendAudit(registry.WithAdminLane(context.Background()), ev); err != ErrClosed {
		t.Errorf("admin write after Close = %v, want ErrClosed", err)
	}
}

// TestAdminLaneReadsOwnPool holds every connection of the read pool, as a
// storm's lookups do: a read in the admin lane is answered, while a device
// read waits for a connection until one is released.
func TestAdminLaneReadsOwnPool(t *testing.T) {
	laneStores(t, Options{ReadConns: 1}, func(t *testing.T, s *Store) {
		ctx := context.Background()
		tok := mustToken(t, s, "lane-"+t.Name(), 1)
		e := enrollment("SN-LANE", tok)
		if err := s.Enroll(ctx, e); err != nil {
			t.Fatal(err)
		}
		pool, err := s.r.DB()
		if err != nil {
			t.Fatal(err)
		}
		if n := pool.Stats().MaxOpenConnections; n != 1 {
			t.Fatalf("read pool = %d connections, want the 1 asked for", n)
		}
		held, err := pool.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
		waitsBefore := pool.Stats().WaitCount

		devRead := make(chan error, 1)
		go func() {
			_, err := s.GetDevice(ctx, e.Device.ID)
			devRead <- err
		}()
		deadline := time.Now().Add(10 * time.Second)
		for pool.Stats().WaitCount == waitsBefore {
			if time.Now().After(deadline) {
				t.Fatal("the device read never waited for the held read pool")
			}
			time.Sleep(time.Millisecond)
		}

		actx := registry.WithAdminLane(ctx)
		d, err := s.GetDevice(actx, e.Device.ID)
		if err != nil || d.Serial != "SN-LANE" {
			t.Fatalf("admin-lane GetDevice with the read pool held = %+v, %v", d, err)
		}
		if _, err := s.GetDeviceBySerial(actx, registry.DefaultTenant, "SN-LANE"); err != nil {
			t.Fatalf("admin-lane GetDeviceBySerial with the read pool held: %v", err)
		}
		if certs, err := s.ListDeviceCertificates(actx, e.Device.ID); err != nil || len(certs) != 1 {
			t.Fatalf("admin-lane ListDeviceCertificates with the read pool held = %d, %v", len(certs), err)
		}
		if err := s.AppendAudit(actx, &registry.AuditEvent{TenantID: registry.DefaultTenant, Actor: "admin:alice", Action: "admin.read", Result: registry.ResultOK}); err != nil {
			t.Fatalf("admin-lane audit with the read pool held: %v", err)
		}
		select {
		case err := <-devRead:
			t.Fatalf("the device read was answered (%v) while the only read connection was held", err)
		default:
		}
		held.Close()
		if err := <-devRead; err != nil {
			t.Fatalf("device read after the pool was released: %v", err)
		}
	})
}

// waitLane waits until n writes are queued in the admin lane.
func waitLane(t testing.TB, s *Store, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(s.prio) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d admin writes queued, want %d", len(s.prio), n)
		}
		time.Sleep(time.Millisecond)
	}
}
