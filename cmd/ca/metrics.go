package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"devpki/api"
	"devpki/pkg/metrics"
)

// MetricsConfig is ca.yaml's metrics section.
type MetricsConfig struct {
	// Enabled turns the Prometheus metrics on (GET /metrics on the HTTPS
	// listener for admin certificates of any role, and metrics_listen);
	// default true. false counts nothing and serves no /metrics.
	Enabled *bool `yaml:"enabled,omitempty"`
}

// On reports whether metrics are enabled.
func (m MetricsConfig) On() bool { return m.Enabled == nil || *m.Enabled }

// validateMetrics is Validate's part for metrics and metrics_listen.
func (c *Config) validateMetrics() []error {
	var errs []error
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			errs = append(errs, fmt.Errorf("metrics_listen: %q is not host:port", c.MetricsListen))
		}
		if !c.Metrics.On() {
			errs = append(errs, errors.New("metrics_listen: set, but metrics.enabled is false (remove one of them)"))
		}
	}
	return errs
}

// newMetrics is the server's metrics, nil when disabled.
func newMetrics(cfg *Config, log *slog.Logger) *metrics.Metrics {
	if !cfg.Metrics.On() {
		return nil
	}
	return metrics.New(metrics.Options{Log: log})
}

// serveMetrics binds cfg.MetricsListen and serves GET /metrics there in
// plain HTTP, without authentication, until ctx ends; nil when there is
// no such listener.
func serveMetrics(ctx context.Context, cfg *Config, m *metrics.Metrics, log *slog.Logger) (<-chan error, error) {
	if cfg.MetricsListen == "" || m == nil {
		return nil, nil
	}
	ln, err := net.Listen("tcp", cfg.MetricsListen)
	if err != nil {
		return nil, fmt.Errorf("metrics listen on %s: %w (pass --metrics-listen ADDR)", cfg.MetricsListen, err)
	}
	srv := &http.Server{
		Handler:           api.MetricsServer(m.Handler()),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	log.Info("serving metrics", "addr", "http://"+ln.Addr().String()+"/metrics")
	errc := make(chan error, 1)
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("metrics listener: %w", err)
		}
	}()
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	return errc, nil
}
