package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// enrollAll runs the enrollments concurrently, released together, and
// returns each one's error.
func enrollAll(s registry.Store, es []*registry.Enrollment) []error {
	errs := make([]error, len(es))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, e := range es {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = s.Enroll(context.Background(), e)
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

// raceToken has n goroutines enroll n different serials with one token of
// uses uses, and checks exactly uses of them succeed.
func raceToken(t *testing.T, s registry.Store, n, uses int) {
	ctx := context.Background()
	tok := mkToken(t, s, registry.DefaultTenant, "", uses, future())
	auditBefore, _ := auditHead(t, s)
	es := make([]*registry.Enrollment, n)
	for i := range es {
		es[i] = newEnrollment(t, registry.DefaultTenant, fmt.Sprintf("SN-RACE-%03d", i), tok.Hash)
	}
	errs := enrollAll(s, es)
	ok := 0
	for i, err := range errs {
		dev, derr := s.GetDeviceBySerial(ctx, registry.DefaultTenant, es[i].Device.Serial)
		_, cerr := s.GetCertificate(ctx, es[i].Certificate.Serial)
		switch {
		case err == nil:
			ok++
			if derr != nil || dev.ID != es[i].Device.ID || cerr != nil {
				t.Errorf("enrollment %d succeeded but device/cert missing: %v / %v", i, derr, cerr)
			}
		case errors.Is(err, registry.ErrTokenSpent):
			if !errors.Is(derr, registry.ErrNotFound) || !errors.Is(cerr, registry.ErrNotFound) {
				t.Errorf("enrollment %d refused but device/cert written: %v / %v", i, derr, cerr)
			}
		default:
			t.Errorf("enrollment %d: %v, want nil or ErrTokenSpent", i, err)
		}
	}
	if ok != uses {
		t.Errorf("%d of %d enrollments succeeded with a %d-use token, want exactly %d", ok, n, uses, uses)
	}
	if got := usesLeft(t, s, tok.Hash); got != 0 {
		t.Errorf("token uses left = %d, want 0", got)
	}
	if auditAfter, _ := auditHead(t, s); auditAfter != auditBefore+ok {
		t.Errorf("audit events: %d new, want %d (one per success)", auditAfter-auditBefore, ok)
	}
	verify(t, s)
}

func testSingleUseTokenRace(t *testing.T, s registry.Store) { raceToken(t, s, 50, 1) }

func testMultiUseTokenRace(t *testing.T, s registry.Store) { raceToken(t, s, 20, 5) }

// testMixedBatch sends good and bad enrollments at once, so that a store that
// groups them shares transactions between them: every bad one fails with its
// own error and changes nothing, every good one commits.
func testMixedBatch(t *testing.T, s registry.Store) {
	ctx := context.Background()
	taken := newEnrollment(t, registry.DefaultTenant, "SN-TAKEN", nil)
	if err := s.Enroll(ctx, taken); err != nil {
		t.Fatal(err)
	}
	spent := mkToken(t, s, registry.DefaultTenant, "", 0, future())
	unknown := sha256.Sum256([]byte("unknown"))

	type job struct {
		e    *registry.Enrollment
		want error // nil for good ones
	}
	var jobs []job
	for i := range 60 {
		serial := fmt.Sprintf("SN-MIX-%03d", i)
		switch i % 6 {
		case 1:
			jobs = append(jobs, job{newEnrollment(t, registry.DefaultTenant, serial, unknown[:]), registry.ErrTokenInvalid})
		case 3:
			jobs = append(jobs, job{newEnrollment(t, registry.DefaultTenant, serial, spent.Hash), registry.ErrTokenSpent})
		case 5:
			// The serial is taken and the token is not bound to it: refused
			// after the token was checked, before it is spent.
			tok := mkToken(t, s, registry.DefaultTenant, "", 1, future())
			e := newEnrollment(t, registry.DefaultTenant, "SN-TAKEN", tok.Hash)
			jobs = append(jobs, job{e, registry.ErrSerialConflict})
		default:
			tok := mkToken(t, s, registry.DefaultTenant, "", 1, future())
			jobs = append(jobs, job{newEnrollment(t, registry.DefaultTenant, serial, tok.Hash), nil})
		}
	}
	auditBefore, _ := auditHead(t, s)
	es := make([]*registry.Enrollment, len(jobs))
	for i := range jobs {
		es[i] = jobs[i].e
	}
	errs := enrollAll(s, es)
	good := 0
	for i, j := range jobs {
		_, cerr := s.GetCertificate(ctx, j.e.Certificate.Serial)
		if j.want == nil {
			good++
			if errs[i] != nil {
				t.Errorf("good enrollment %d: %v", i, errs[i])
			} else if cerr != nil {
				t.Errorf("good enrollment %d: certificate missing: %v", i, cerr)
			}
			if got := usesLeft(t, s, j.e.TokenHash); got != 0 {
				t.Errorf("good enrollment %d: token uses left %d, want 0", i, got)
			}
			continue
		}
		if !errors.Is(errs[i], j.want) {
			t.Errorf("bad enrollment %d: %v, want %v", i, errs[i], j.want)
		}
		if !errors.Is(cerr, registry.ErrNotFound) {
			t.Errorf("bad enrollment %d: certificate written (%v)", i, cerr)
		}
		if j.want == registry.ErrSerialConflict {
			if got := usesLeft(t, s, j.e.TokenHash); got != 1 {
				t.Errorf("bad enrollment %d: token spent (%d uses left, want 1)", i, got)
			}
		} else if _, err := s.GetDeviceBySerial(ctx, registry.DefaultTenant, j.e.Device.Serial); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("bad enrollment %d: device written (%v)", i, err)
		}
	}
	if certs, err := s.ListDeviceCertificates(ctx, taken.Device.ID); err != nil || len(certs) != 1 || certs[0].Status != registry.CertActive {
		t.Errorf("certificates of the taken serial changed: %v, %v", certs, err)
	}
	if auditAfter, _ := auditHead(t, s); auditAfter != auditBefore+good {
		t.Errorf("audit events: %d new, want %d", auditAfter-auditBefore, good)
	}
	verify(t, s)
}

// testCancelledContext: an enrollment whose context ends is either fully
// applied (nil error) or not applied at all (the context's error).
func testCancelledContext(t *testing.T, s registry.Store) {
	for i := range 20 {
		tok := mkToken(t, s, registry.DefaultTenant, "", 1, future())
		e := newEnrollment(t, registry.DefaultTenant, fmt.Sprintf("SN-CANCEL-%02d", i), tok.Hash)
		ctx, cancel := context.WithCancel(context.Background())
		if i%2 == 0 {
			cancel()
		} else {
			time.AfterFunc(time.Duration(i)*50*time.Microsecond, cancel)
		}
		err := s.Enroll(ctx, e)
		cancel()
		_, derr := s.GetDeviceBySerial(context.Background(), registry.DefaultTenant, e.Device.Serial)
		uses := usesLeft(t, s, tok.Hash)
		switch {
		case err == nil:
			if derr != nil || uses != 0 {
				t.Errorf("%d: Enroll succeeded but device err=%v, uses left %d", i, derr, uses)
			}
		case errors.Is(err, context.Canceled):
			if !errors.Is(derr, registry.ErrNotFound) || uses != 1 {
				t.Errorf("%d: Enroll cancelled but device err=%v, uses left %d", i, derr, uses)
			}
		default:
			t.Errorf("%d: Enroll = %v, want nil or context.Canceled", i, err)
		}
	}
	verify(t, s)
}

func testAudit(t *testing.T, s registry.Store) {
	ctx := context.Background()
	_, last := auditHead(t, s)
	var prevHash []byte
	if last > 0 {
		evs, err := s.ListAudit(ctx, last-1, 1)
		if err != nil || len(evs) != 1 {
			t.Fatalf("ListAudit(last) = %v, %v", evs, err)
		}
		prevHash = evs[0].Hash
	} else {
		prevHash = make([]byte, sha256.Size)
	}
	when := time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.UTC)
	ev := &registry.AuditEvent{
		Time: when, TenantID: registry.DefaultTenant, Actor: "admin:bob", Action: "revoke", Target: "abc",
		Result: registry.ResultDenied, Detail: "not allowed", SourceAddr: "198.51.100.7:443",
	}
	if err := s.AppendAudit(ctx, ev); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	if ev.Seq != last+1 || !bytes.Equal(ev.PrevHash, prevHash) || len(ev.Hash) != sha256.Size || !ev.Time.Equal(when) {
		t.Errorf("AppendAudit filled %+v; want seq %d, prev %x", ev, last+1, prevHash)
	}
	noTime := &registry.AuditEvent{Actor: "system", Action: "noop", Result: registry.ResultOK}
	if err := s.AppendAudit(ctx, noTime); err != nil {
		t.Fatal(err)
	}
	if noTime.Time.IsZero() || !bytes.Equal(noTime.PrevHash, ev.Hash) || noTime.Seq != ev.Seq+1 {
		t.Errorf("second event %+v does not chain after %+v", noTime, ev)
	}
	got, err := s.ListAudit(ctx, last, 10)
	if err != nil || len(got) != 2 {
		t.Fatalf("ListAudit = %v, %v", got, err)
	}
	g := got[0]
	if g.Seq != ev.Seq || !g.Time.Equal(when) || g.Actor != "admin:bob" || g.Action != "revoke" || g.Target != "abc" ||
		g.Result != registry.ResultDenied || g.Detail != "not allowed" || g.SourceAddr != ev.SourceAddr ||
		g.TenantID != registry.DefaultTenant || !bytes.Equal(g.Hash, ev.Hash) || !bytes.Equal(g.PrevHash, ev.PrevHash) {
		t.Errorf("stored event %+v, want %+v", g, ev)
	}
	verify(t, s)
}

func testListAuditPaging(t *testing.T, s registry.Store) {
	ctx := context.Background()
	_, start := auditHead(t, s)
	var wg sync.WaitGroup
	for i := range 25 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.AppendAudit(ctx, &registry.AuditEvent{Actor: "system", Action: "page", Detail: fmt.Sprint(i)}); err != nil {
				t.Errorf("AppendAudit: %v", err)
			}
		}()
	}
	wg.Wait()
	var seqs []int64
	after := start
	for page := 0; ; page++ {
		evs, err := s.ListAudit(ctx, after, 10)
		if err != nil {
			t.Fatalf("ListAudit: %v", err)
		}
		if len(evs) == 0 {
			break
		}
		if len(evs) > 10 || (len(evs) < 10 && page != 2) {
			t.Errorf("page %d has %d events", page, len(evs))
		}
		for _, ev := range evs {
			seqs = append(seqs, ev.Seq)
		}
		after = evs[len(evs)-1].Seq
	}
	if len(seqs) != 25 {
		t.Fatalf("paged %d events, want 25", len(seqs))
	}
	for i, seq := range seqs {
		if seq != start+int64(i)+1 {
			t.Fatalf("seq[%d] = %d, want %d (gapless, in order)", i, seq, start+int64(i)+1)
		}
	}
	verify(t, s)
}
