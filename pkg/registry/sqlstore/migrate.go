package sqlstore

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
	"github.com/pressly/goose/v3/lock"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/logger"

	"devpki/pkg/registry"
)

// Schema versions.
//
// The schema is managed by numbered migrations (github.com/pressly/goose),
// one directory per dialect under migrations/, embedded in the binary:
// 00001_baseline.sql is the schema as gorm AutoMigrate made it before
// versioned migrations; every later change is a new file NNNNN_name.sql in
// both directories (or a Go migration in goMigrations). The applied
// versions are recorded in the table goose_db_version. The gorm models in
// models.go stay the Go view of the schema; TestModelsMatchSchema checks
// that every model column exists once all migrations ran.

//go:embed migrations
var migrationFiles embed.FS

// VersionTable is the table recording the applied schema versions.
const VersionTable = "goose_db_version"

// BaselineVersion is the first versioned schema: the one devpki made
// before versioned migrations. A registry from then is brought to it by
// the legacy path (legacy.go) and then recorded at it.
const BaselineVersion = 1

// migrationLockID is the PostgreSQL advisory lock taken while migrating
// (crc32 of "devpki schema migrations"), so replicas starting together
// migrate one after the other.
const migrationLockID = 0x5e1f_d0a1

// Schema errors. Open wraps them with the versions involved.
var (
	// ErrSchemaTooNew: the registry was migrated by a newer devpki.
	ErrSchemaTooNew = errors.New("registry schema is newer than this devpki")
	// ErrSchemaOutdated: migrations are pending and Options.Migrate is
	// MigrateNever.
	ErrSchemaOutdated = errors.New("registry schema is out of date")
)

// MigrateMode says what Open does with a registry whose schema is behind.
type MigrateMode int

const (
	// MigrateAuto (the zero value) applies pending migrations, under a
	// lock on PostgreSQL, and creates the schema of an empty database.
	MigrateAuto MigrateMode = iota
	// MigrateNever refuses (ErrSchemaOutdated) unless the schema is
	// current; nothing is changed.
	MigrateNever
)

// goMigrations are migrations SQL cannot express, per driver, registered
// beside the SQL files with goose.NewGoMigration(version, &goose.GoFunc{RunTx: ...}, nil).
// They must run in the transaction (RunTx): the SQLite writer pool has one
// connection, which goose holds while migrating.
// goMigrationNames name the Go migrations (ca db status).
var goMigrationNames = map[int64]string{7: "00007_fill_mac_history (Go)"}

var goMigrations = map[string][]*goose.Migration{
	DriverSQLite:   {migrateMACHistory(DriverSQLite)},
	DriverPostgres: {migrateMACHistory(DriverPostgres)},
}

// Schema is the state of a registry's schema.
type Schema struct {
	Driver string
	// Current is the applied version: 0 for an empty database (or a
	// legacy one).
	Current int64
	// Latest is the newest version this binary knows.
	Latest int64
	// Empty: no devpki table at all.
	Empty bool
	// Legacy: a registry made before versioned migrations (tables, no
	// version table); it is migrated through the legacy path.
	Legacy bool
	// Migrations lists every migration this binary knows, and any the
	// database records that it does not, in version order.
	Migrations []MigrationState
}

// MigrationState is one migration of a Schema.
type MigrationState struct {
	Version   int64
	Name      string // file name; empty for a version this binary does not know
	Applied   bool
	AppliedAt time.Time // zero when not applied (or legacy)
}

// Pending reports whether migrations remain to be applied.
func (s *Schema) Pending() bool { return s.Empty || s.Legacy || s.Current < s.Latest }

// TooNew reports whether a newer devpki migrated the registry.
func (s *Schema) TooNew() bool { return s.Current > s.Latest }

// AppliedMigration is one migration Open applied (Options.OnMigration).
type AppliedMigration struct {
	Version  int64
	Name     string
	Duration time.Duration
}

func dialectOf(driver string) (goose.Dialect, string, error) {
	switch driver {
	case DriverSQLite:
		return goose.DialectSQLite3, "migrations/sqlite", nil
	case DriverPostgres:
		return goose.DialectPostgres, "migrations/postgres", nil
	}
	return "", "", fmt.Errorf("sqlstore: unknown driver %q", driver)
}

// newProvider is goose over db for driver, with the embedded migrations.
func newProvider(driver string, db *sql.DB) (*goose.Provider, error) {
	dialect, dir, err := dialectOf(driver)
	if err != nil {
		return nil, err
	}
	fsys, err := fs.Sub(migrationFiles, dir)
	if err != nil {
		return nil, err
	}
	p, err := goose.NewProvider(dialect, db, fsys,
		goose.WithDisableGlobalRegistry(true),
		goose.WithGoMigrations(goMigrations[driver]...),
		goose.WithTableName(VersionTable))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: migrations: %w", err)
	}
	return p, nil
}

// schema reads the schema state without changing anything (goose creates
// its version table on first use, so it is asked only when the table
// exists).
func schemaOf(ctx context.Context, driver string, db *gorm.DB) (*Schema, error) {
	sqlDB, err := db.DB()
	if err != nil {
		return nil, err
	}
	p, err := newProvider(driver, sqlDB)
	if err != nil {
		return nil, err
	}
	st := &Schema{Driver: driver}
	known := map[int64]bool{}
	for _, src := range p.ListSources() {
		st.Latest = max(st.Latest, src.Version)
		known[src.Version] = true
	}
	m := db.WithContext(ctx).Migrator()
	hasVersions := m.HasTable(VersionTable)
	if !hasVersions {
		st.Legacy = m.HasTable("tenants")
		st.Empty = !st.Legacy
		for _, src := range p.ListSources() {
			st.Migrations = append(st.Migrations, MigrationState{Version: src.Version, Name: baseName(src.Path)})
		}
		// A query that reaches the database, so an unreachable one is an
		// error here rather than an "empty" registry.
		var n int
		if err := db.WithContext(ctx).Raw("SELECT 1").Scan(&n).Error; err != nil {
			return nil, fmt.Errorf("sqlstore: read schema version: %w", unavailable(err))
		}
		return st, nil
	}
	ms, err := p.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: read schema version: %w", unavailable(err))
	}
	for _, s := range ms {
		ms := MigrationState{Version: s.Source.Version, Name: baseName(s.Source.Path), Applied: s.State == goose.StateApplied}
		if ms.Name == "" {
			ms.Name = goMigrationNames[ms.Version]
		}
		if ms.Applied {
			ms.AppliedAt = s.AppliedAt.UTC()
		}
		st.Migrations = append(st.Migrations, ms)
	}
	// Versions a newer devpki applied, which this binary has no file for.
	var applied []int64
	if err := db.WithContext(ctx).Table(VersionTable).Where("is_applied AND version_id > 0").
		Order("version_id").Pluck("version_id", &applied).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: read schema versions: %w", unavailable(err))
	}
	for _, v := range applied {
		st.Current = max(st.Current, v)
		if !known[v] {
			st.Migrations = append(st.Migrations, MigrationState{Version: v, Applied: true})
		}
	}
	return st, nil
}

func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

// tooNew is the error for a registry a newer devpki migrated.
func tooNew(st *Schema) error {
	return fmt.Errorf("%w: the registry is at schema version %d, this devpki knows versions up to %d — a newer devpki "+
		"migrated it; run that release or a newer one (upgrade this binary), never an older one", ErrSchemaTooNew, st.Current, st.Latest)
}

// migrate brings the schema to the latest version (or refuses, per mode),
// then writes the rows every registry holds. On PostgreSQL it runs under a
// session advisory lock, so that replicas starting together migrate one at
// a time and the later ones find the work done.
func (s *Store) migrate(ctx context.Context, mode MigrateMode, onApplied func(AppliedMigration)) error {
	sqlDB, err := s.w.DB()
	if err != nil {
		return err
	}
	if s.driver == DriverPostgres {
		// The usual start, a current schema, needs no lock; any other
		// state is read again under it.
		if st, err := schemaOf(ctx, s.driver, s.w); err == nil && !st.Pending() && !st.TooNew() {
			return s.seed(ctx)
		}
		unlock, err := lockMigrations(ctx, sqlDB)
		if err != nil {
			return err
		}
		defer unlock()
	}
	st, err := schemaOf(ctx, s.driver, s.w)
	if err != nil {
		return err
	}
	switch {
	case st.TooNew():
		return tooNew(st)
	case mode == MigrateNever && st.Pending():
		return fmt.Errorf("%w: the registry is at schema version %d%s, this devpki needs version %d", ErrSchemaOutdated,
			st.Current, map[bool]string{true: " (from before versioned migrations)"}[st.Legacy], st.Latest)
	}
	if st.Legacy {
		start := time.Now()
		if err := s.legacyMigrate(ctx); err != nil {
			return err
		}
		if err := recordBaseline(ctx, s.driver, sqlDB); err != nil {
			return err
		}
		if onApplied != nil {
			onApplied(AppliedMigration{Version: BaselineVersion, Name: "legacy upgrade to the baseline", Duration: time.Since(start)})
		}
	}
	if st.Pending() {
		p, err := newProvider(s.driver, sqlDB)
		if err != nil {
			return err
		}
		res, err := p.Up(ctx)
		for _, r := range res {
			if onApplied != nil && r.Error == nil {
				onApplied(AppliedMigration{Version: r.Source.Version, Name: baseName(r.Source.Path), Duration: r.Duration})
			}
		}
		if err != nil {
			return fmt.Errorf("sqlstore: migrate schema: %w", unavailable(err))
		}
	}
	return s.seed(ctx)
}

// lockMigrations takes the migration advisory lock on a connection of its
// own, waiting for another replica's migration as long as ctx allows (or
// ten minutes), and returns its release.
func lockMigrations(ctx context.Context, db *sql.DB) (func(), error) {
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(migrationLockID),
		lock.WithLockTimeout(1, 600), lock.WithUnlockTimeout(1, 30))
	if err != nil {
		return nil, err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: migrate: %w", unavailable(err))
	}
	if err := locker.SessionLock(ctx, conn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("sqlstore: migrate: take the migration lock (another replica migrating?): %w", unavailable(err))
	}
	return func() {
		// Closing the connection would release the lock as well; the pool
		// keeps it, so release it explicitly.
		if err := locker.SessionUnlock(context.WithoutCancel(ctx), conn); err != nil {
			_ = conn.Raw(func(any) error { return driver.ErrBadConn }) // drop the session, and its lock, with the connection
		}
		conn.Close()
	}, nil
}

// recordBaseline records a legacy registry, just brought to the baseline,
// as being at BaselineVersion.
func recordBaseline(ctx context.Context, driver string, db *sql.DB) error {
	dialect, _, err := dialectOf(driver)
	if err != nil {
		return err
	}
	store, err := database.NewStore(database.Dialect(dialect), VersionTable)
	if err != nil {
		return err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlstore: record the baseline version: %w", unavailable(err))
	}
	defer tx.Rollback()
	if err := store.CreateVersionTable(ctx, tx); err != nil {
		return fmt.Errorf("sqlstore: create %s: %w", VersionTable, unavailable(err))
	}
	for _, v := range []int64{0, BaselineVersion} {
		if err := store.Insert(ctx, tx, database.InsertRequest{Version: v}); err != nil {
			return fmt.Errorf("sqlstore: record schema version %d: %w", v, unavailable(err))
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlstore: record the baseline version: %w", unavailable(err))
	}
	return nil
}

// seed writes the rows every registry holds: the default tenant, the
// audit chain head, the CRL counter and the heartbeat row.
func (s *Store) seed(ctx context.Context) error {
	db := s.w.WithContext(ctx)
	now := ts(s.now())
	rows := []struct {
		what string
		row  any
	}{
		{"default tenant", &tenantRow{ID: registry.DefaultTenant, Name: registry.DefaultTenant, CreatedAt: now}},
		{"audit head", &auditHeadRow{ID: 1, Seq: 0, Hash: make([]byte, sha256.Size)}},
		// Its columns as of the baseline (legacyRegistry seeds one
		// before the later migrations add theirs, which have defaults).
		{"CRL counter", &legacyCrlCounterRow{ID: 1}},
		{"heartbeat", &heartbeatRow{ID: 1}},
	}
	for _, r := range rows {
		q := db.Clauses(clause.OnConflict{DoNothing: true})
		if _, ok := r.row.(*tenantRow); ok {
			// The baseline's columns only: the legacy path seeds a registry
			// before the later migrations add theirs (defaults fill them).
			q = q.Select("id", "name", "require_tpm", "methods", "key_types", "cert_lifetime_seconds", "created_at")
		}
		if err := q.Create(r.row).Error; err != nil {
			return fmt.Errorf("sqlstore: create %s: %w", r.what, translate(err))
		}
	}
	return nil
}

// ReadSchema reports the schema state of the registry opts names, changing
// nothing. A SQLite file that does not exist is an error, not an empty
// registry.
func ReadSchema(ctx context.Context, opts Options) (*Schema, error) {
	db, err := connect(opts, false)
	if err != nil {
		return nil, err
	}
	defer closeDB(db)
	st, err := schemaOf(ctx, driverOf(opts), db)
	if err != nil {
		return nil, err
	}
	return st, nil
}

func driverOf(opts Options) string {
	if opts.Driver == "" {
		return DriverSQLite
	}
	return opts.Driver
}

// connect opens one plain connection pool on opts (no migration, no
// committer), for reading the schema. create allows a new SQLite file.
func connect(opts Options, create bool) (*gorm.DB, error) {
	if opts.DSN == "" {
		return nil, errors.New("sqlstore: open: empty DSN")
	}
	cfg := &gorm.Config{Logger: logger.Discard, SkipDefaultTransaction: true, TranslateError: true}
	switch driverOf(opts) {
	case DriverSQLite:
		if path := sqlitePath(opts.DSN); !create {
			if _, err := os.Stat(path); err != nil {
				return nil, fmt.Errorf("sqlstore: open registry %s: %w", path, err)
			}
		}
		db, err := gorm.Open(sqlite.Open(sqliteDSN(opts.DSN, false)), cfg)
		if err != nil {
			return nil, fmt.Errorf("sqlstore: open sqlite: %w", err)
		}
		return db, setPool(db, 1)
	case DriverPostgres:
		db, err := gorm.Open(postgres.Open(withConnectTimeout(opts.DSN)), cfg)
		if err != nil {
			return nil, fmt.Errorf("sqlstore: open postgres: %w", unavailable(err))
		}
		return db, setPool(db, 2)
	}
	return nil, fmt.Errorf("sqlstore: open: unknown driver %q", opts.Driver)
}
