package main

import (
	"context"
	"fmt"
	"io"

	"devpki/pkg/registry/sqlstore"
)

// cmdAuditVerify walks the audit hash chain in the registry database named
// by the config. It reads the database directly, so it runs on the CA host
// (or against the PostgreSQL server) even when the API is down.
func cmdAuditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var configPath string
	fs := newFlags("audit verify", stderr)
	fs.StringVar(&configPath, "config", "", "path of ca.yaml")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if configPath == "" {
		return fmt.Errorf("%w: --config DIR/ca.yaml is required", errUsage)
	}
	cfg, err := LoadConfig(configPath)
	if err != nil {
		return err
	}
	store, err := sqlstore.Open(ctx, sqlstore.Options{Driver: cfg.DB.Driver, DSN: cfg.DSN()})
	if err != nil {
		return fmt.Errorf("open registry: %w", err)
	}
	defer store.Close()
	if err := store.VerifyAudit(ctx); err != nil {
		return fmt.Errorf("audit chain does NOT verify: %w", err)
	}
	fmt.Fprintln(stdout, "audit chain verified")
	return nil
}
