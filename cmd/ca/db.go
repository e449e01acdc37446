package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"devpki/pkg/metrics"
	"devpki/pkg/registry/sqlstore"
)

// db.migrate values.
const (
	dbMigrateAuto   = "auto"
	dbMigrateManual = "manual"
)

// db.prefetch values.
const (
	dbPrefetchAuto = "auto"
	dbPrefetchOff  = "off"
)

// prefetchRegistry has the kernel read a SQLite registry into the page
// cache in the background while 'ca serve' starts (sqlstore.Prefetch: only
// when it fits in half of the available memory), unless ca.yaml sets
// db.prefetch: off, and logs what it did.
func prefetchRegistry(ctx context.Context, cfg *Config, store *sqlstore.Store, log *slog.Logger) {
	if cfg.DB.Prefetch == dbPrefetchOff || cfg.DB.Driver == sqlstore.DriverPostgres {
		return
	}
	go func() {
		rep, err := store.Prefetch(ctx)
		switch {
		case err != nil:
			log.Warn("registry not prefetched into the page cache; the first requests read it from disk (db.prefetch: off silences this)", "err", err)
		case rep.Skipped != "":
			log.Info("registry not prefetched into the page cache", "file", rep.File, "reason", rep.Skipped)
		default:
			log.Info("registry prefetched into the page cache", "file", rep.File, "mib", rep.Advised>>20,
				"available_mib", rep.Available>>20, "took", rep.Took.Round(time.Millisecond))
		}
	}()
}

// storeOptions opens the registry as ca.yaml says: its driver and DSN, and
// whether a schema behind this binary is migrated or refused.
func (c *Config) storeOptions() sqlstore.Options {
	o := sqlstore.Options{Driver: c.DB.Driver, DSN: c.DSN()}
	if c.DB.Migrate == dbMigrateManual {
		o.Migrate = sqlstore.MigrateNever
	}
	return o
}

// openServeStore opens the registry for 'ca serve', logging each schema
// migration it applies, and turns schema refusals into what to do.
func openServeStore(ctx context.Context, cfg *Config, log *slog.Logger, mx *metrics.Metrics, writers func() int) (*sqlstore.Store, error) {
	opts := cfg.storeOptions()
	opts.Writers = writers
	if mx != nil {
		opts.Observer = mx
	}
	opts.OnMigration = func(m sqlstore.AppliedMigration) {
		log.Info("registry schema migrated", "version", m.Version, "migration", m.Name, "took", m.Duration.Round(time.Millisecond))
	}
	store, err := sqlstore.Open(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("open registry: %w", schemaAdvice(err))
	}
	return store, nil
}

// schemaAdvice adds what an operator does about a schema refusal.
func schemaAdvice(err error) error {
	switch {
	case errors.Is(err, sqlstore.ErrSchemaOutdated):
		return fmt.Errorf("%w; db.migrate is manual: run 'ca db migrate --config ca.yaml' (once, on one host), then start again", err)
	case errors.Is(err, sqlstore.ErrSchemaTooNew):
		return fmt.Errorf("%w (see 'ca db status')", err)
	}
	return err
}

const dbHelp = `usage: ca db status --config DIR/ca.yaml [--output json]
       ca db migrate --config DIR/ca.yaml

status   the registry's schema version, the newest this binary knows, and each migration (applied when)
migrate  apply the pending migrations (a registry from before versioned migrations is upgraded first);
         on PostgreSQL under an advisory lock, so replicas starting meanwhile wait for it.
         'ca serve' does the same on start unless ca.yaml sets db.migrate: manual.
`

// cmdDB is 'ca db status|migrate'.
func cmdDB(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "status" && args[0] != "migrate") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stdout, dbHelp)
			return nil
		}
		fmt.Fprint(stderr, dbHelp)
		return fmt.Errorf("%w: 'ca db' takes the subcommand status or migrate", errUsage)
	}
	sub := args[0]
	fs := newFlags("db "+sub, stderr)
	config := fs.String("config", "", "CA configuration (DIR/ca.yaml)")
	var output *string
	if sub == "status" {
		output = fs.String("output", "text", "text or json")
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if *config == "" {
		return fmt.Errorf("%w: --config DIR/ca.yaml is required", errUsage)
	}
	if output != nil && *output != "text" && *output != "json" {
		return fmt.Errorf("%w: --output %q is neither text nor json", errUsage, *output)
	}
	cfg, err := LoadConfig(*config)
	if err != nil {
		return err
	}
	opts := cfg.storeOptions()
	where := cfg.DB.Driver + " " + redactDSN(opts.DSN)
	st, err := sqlstore.ReadSchema(ctx, opts)
	if err != nil {
		return fmt.Errorf("read the schema of the registry (%s): %w", where, err)
	}
	if sub == "status" {
		return printSchema(stdout, where, st, *output)
	}
	switch {
	case st.TooNew():
		return schemaAdvice(fmt.Errorf("%w: the registry is at schema version %d, this devpki knows versions up to %d; "+
			"upgrade this binary", sqlstore.ErrSchemaTooNew, st.Current, st.Latest))
	case !st.Pending():
		fmt.Fprintf(stdout, "registry schema is current (version %d); nothing to do\n", st.Current)
		return nil
	case st.Empty:
		fmt.Fprintf(stderr, "registry %s is empty: creating the schema (version %d)\n", where, st.Latest)
	case st.Legacy:
		fmt.Fprintf(stderr, "registry %s predates versioned migrations: upgrading it to the baseline, then to version %d\n", where, st.Latest)
	default:
		fmt.Fprintf(stderr, "registry %s is at schema version %d: migrating to version %d\n", where, st.Current, st.Latest)
	}
	opts.Migrate = sqlstore.MigrateAuto
	opts.OnMigration = func(m sqlstore.AppliedMigration) {
		fmt.Fprintf(stderr, "  applied %d %s (%s)\n", m.Version, m.Name, m.Duration.Round(time.Millisecond))
	}
	store, err := sqlstore.Open(ctx, opts)
	if err != nil {
		return fmt.Errorf("migrate the registry (%s): %w", where, schemaAdvice(err))
	}
	if err := store.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "registry schema is at version %d\n", st.Latest)
	return nil
}

// schemaJSON is 'ca db status --output json'.
type schemaJSON struct {
	Driver     string          `json:"driver"`
	Current    int64           `json:"current"`
	Latest     int64           `json:"latest"`
	State      string          `json:"state"` // current, pending, legacy, empty, too-new
	Migrations []migrationJSON `json:"migrations"`
}

type migrationJSON struct {
	Version   int64      `json:"version"`
	Name      string     `json:"name,omitempty"`
	Applied   bool       `json:"applied"`
	AppliedAt *time.Time `json:"applied_at,omitempty"`
}

func schemaState(st *sqlstore.Schema) string {
	switch {
	case st.TooNew():
		return "too-new"
	case st.Empty:
		return "empty"
	case st.Legacy:
		return "legacy"
	case st.Pending():
		return "pending"
	}
	return "current"
}

func printSchema(w io.Writer, where string, st *sqlstore.Schema, output string) error {
	if output == "json" {
		out := schemaJSON{Driver: st.Driver, Current: st.Current, Latest: st.Latest, State: schemaState(st),
			Migrations: []migrationJSON{}}
		for _, m := range st.Migrations {
			mj := migrationJSON{Version: m.Version, Name: m.Name, Applied: m.Applied}
			if !m.AppliedAt.IsZero() {
				at := m.AppliedAt
				mj.AppliedAt = &at
			}
			out.Migrations = append(out.Migrations, mj)
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(w, "registry:  %s\n", where)
	fmt.Fprintf(w, "schema:    version %d (this devpki knows up to %d)\n", st.Current, st.Latest)
	var state string
	switch schemaState(st) {
	case "too-new":
		state = "NEWER than this devpki: upgrade this binary before serving this registry"
	case "empty":
		state = "empty: 'ca init --db' or 'ca db migrate' creates the schema"
	case "legacy":
		state = "from before versioned migrations: 'ca db migrate' (or 'ca serve') upgrades it"
	case "pending":
		state = "migrations pending: 'ca db migrate' (or 'ca serve' with db.migrate auto) applies them"
	default:
		state = "current"
	}
	fmt.Fprintf(w, "state:     %s\n\n", state)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tMIGRATION\tAPPLIED")
	for _, m := range st.Migrations {
		name, applied := m.Name, "pending"
		if name == "" {
			name = "(unknown to this devpki)"
		}
		switch {
		case !m.AppliedAt.IsZero():
			applied = m.AppliedAt.Format(time.RFC3339)
		case m.Applied:
			applied = "yes"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\n", m.Version, name, applied)
	}
	return tw.Flush()
}

var dsnPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// redactDSN hides the password of a PostgreSQL connection string (URL or
// key=value) so that it can be printed.
func redactDSN(dsn string) string {
	if strings.Contains(dsn, "://") {
		if u, err := url.Parse(dsn); err == nil {
			q := u.Query()
			if q.Has("password") {
				q.Set("password", "xxxxx")
				u.RawQuery = q.Encode()
			}
			return u.Redacted()
		}
		return "(unparsable URL)"
	}
	return dsnPassword.ReplaceAllString(dsn, "${1}xxxxx")
}
