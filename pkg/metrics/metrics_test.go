package metrics_test

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"devpki/pkg/metrics"
)

// countingStore counts the expiring-certificate queries it answers.
type countingStore struct {
	calls int
	n     int64
	err   error
}

func (c *countingStore) CountExpiring(_ context.Context, from, to time.Time) (int64, error) {
	c.calls++
	if c.err != nil {
		return 0, c.err
	}
	return c.n * int64(to.Sub(from)/(24*time.Hour)), nil
}

func scrape(t *testing.T, m *metrics.Metrics) metrics.Families {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	fs, err := metrics.Parse(bytes.NewReader(rec.Body.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func TestExpiringCachedBetweenScrapes(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	st := &countingStore{n: 1}
	m := metrics.New(metrics.Options{Expiring: st, ExpiryTTL: time.Minute, Now: func() time.Time { return now }})
	fs := scrape(t, m)
	if v, _ := fs.Value("devpki_certificates_expiring", "within", "7d"); v != 7 {
		t.Errorf("7d: %v, want 7", v)
	}
	if v, _ := fs.Value("devpki_certificates_expiring", "within", "30d"); v != 30 {
		t.Errorf("30d: %v, want 30", v)
	}
	calls := st.calls
	st.n = 2
	now = now.Add(30 * time.Second)
	scrape(t, m)
	if st.calls != calls {
		t.Errorf("a scrape within the TTL queried the store again (%d queries, want %d)", st.calls, calls)
	}
	now = now.Add(time.Minute)
	if v, _ := scrape(t, m).Value("devpki_certificates_expiring", "within", "7d"); v != 14 || st.calls != 2*calls {
		t.Errorf("after the TTL: 7d %v (want 14), %d queries (want %d)", v, st.calls, 2*calls)
	}
	// A failing store keeps the last good counts.
	st.err = errors.New("database is locked")
	now = now.Add(2 * time.Minute)
	if v, ok := scrape(t, m).Value("devpki_certificates_expiring", "within", "7d"); !ok || v != 14 {
		t.Errorf("store failing: 7d %v %v, want the last count 14", v, ok)
	}
}

func TestRegistriesApart(t *testing.T) {
	a, b := metrics.New(metrics.Options{}), metrics.New(metrics.Options{})
	a.Enrollment("token", "ok")
	a.Enrollment("token", "token-invalid")
	a.AuthFailure("enroll")
	a.CRLBuilt(42, 3*time.Millisecond)
	a.Committed(7, time.Millisecond)
	fa, fb := scrape(t, a), scrape(t, b)
	for _, c := range []struct {
		fs     metrics.Families
		name   string
		labels []string
		want   float64
	}{
		{fa, "devpki_enrollments_total", []string{"method", "token", "result", "ok"}, 1},
		{fa, "devpki_enrollments_total", []string{"method", "token", "result", "token-invalid"}, 1},
		{fa, "devpki_auth_failures_total", []string{"door", "enroll"}, 1},
		{fa, "devpki_crl_number", nil, 42},
		{fa, "devpki_crl_build_seconds", nil, 1},
		{fa, "devpki_registry_batch_size", nil, 1},
		{fb, "devpki_enrollments_total", []string{"method", "token", "result", "ok"}, 0},
		{fb, "devpki_auth_failures_total", []string{"door", "enroll"}, 0},
	} {
		if v, ok := c.fs.Value(c.name, c.labels...); !ok || v != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	if _, ok := fa["devpki_certificates_expiring"]; ok {
		t.Error("devpki_certificates_expiring served without a store")
	}
}
