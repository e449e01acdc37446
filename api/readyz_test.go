package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/labstack/echo/v4"

	"devpki/api/wire"
	"devpki/pkg/registry"
)

// TestStoreUnavailableProblem: an error wrapping registry.ErrUnavailable,
// from any handler, is 503 store-unavailable with Retry-After and no detail.
func TestStoreUnavailableProblem(t *testing.T) {
	e := echo.New()
	rec := httptest.NewRecorder()
	c := e.NewContext(httptest.NewRequest(http.MethodPost, "/v1/enroll", nil), rec)
	cause := fmt.Errorf("provision: record enrollment: %w", fmt.Errorf("%w: database or disk is full", registry.ErrUnavailable))
	errorHandler(slog.New(slog.NewTextHandler(io.Discard, nil)))(cause, c)

	p := checkStoreUnavailable(t, rec)
	if p.Detail != "" {
		t.Errorf("detail %q leaks the cause", p.Detail)
	}
}

func checkStoreUnavailable(t *testing.T, rec *httptest.ResponseRecorder) wire.Problem {
	t.Helper()
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503: %s", rec.Code, rec.Body)
	}
	want := strconv.Itoa(int(RetryAfterStoreUnavailable.Seconds()))
	if got := rec.Header().Get("Retry-After"); got != want {
		t.Errorf("Retry-After %q, want %q", got, want)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q", ct)
	}
	var p wire.Problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	if p.Slug() != wire.SlugStoreUnavailable || p.Status != http.StatusServiceUnavailable {
		t.Errorf("problem %+v, want %s", p, wire.SlugStoreUnavailable)
	}
	return p
}

// pingStore is a registry.Store whose only working method is Ping.
type pingStore struct {
	registry.Store
	pingErr error
}

func (s *pingStore) Ping(context.Context) error { return s.pingErr }

// readyStore is a pingStore that also reports readiness.
type readyStore struct {
	pingStore
	readyErr error
}

func (s *readyStore) Ready(context.Context) error { return s.readyErr }

func TestReadyz(t *testing.T) {
	down := fmt.Errorf("%w: attempt to write a readonly database", registry.ErrUnavailable)
	for _, tc := range []struct {
		name  string
		store registry.Store
		ready bool
	}{
		{"ready", &readyStore{}, true},
		{"cannot commit", &readyStore{readyErr: down}, false},
		{"does not answer", &readyStore{pingStore: pingStore{pingErr: errors.New("connection refused")}}, false},
		{"store without Ready", &pingStore{}, true},
		{"store without Ready does not answer", &pingStore{pingErr: errors.New("closed")}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{cfg: Config{Store: tc.store, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}}
			e := echo.New()
			e.HTTPErrorHandler = errorHandler(s.cfg.Log)
			e.GET("/readyz", s.readyz)
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			if tc.ready {
				if rec.Code != http.StatusOK {
					t.Fatalf("status %d, want 200: %s", rec.Code, rec.Body)
				}
				return
			}
			checkStoreUnavailable(t, rec)
		})
	}
}
