package sqlstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
	"gorm.io/gorm/schema"

	"devpki/pkg/registry"
)

// dialects runs f on SQLite and, with DEVPKI_TEST_POSTGRES_DSN (key=value
// form), on PostgreSQL. newDB returns the DSN of a new, empty database
// (a SQLite file path, or a PostgreSQL schema of the test database).
func dialects(t *testing.T, f func(t *testing.T, driver string, newDB func() string)) {
	t.Run("sqlite", func(t *testing.T) {
		f(t, DriverSQLite, func() string { return filepath.Join(t.TempDir(), "registry.db") })
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := pgDSN(t)
		if strings.Contains(dsn, "://") {
			t.Skip("migration tests need a key=value DSN")
		}
		f(t, DriverPostgres, func() string { return pgEmptySchema(t, dsn) })
	})
}

// pgEmptySchema creates a schema, dropped when the test ends, and returns
// dsn with it as search_path.
func pgEmptySchema(t *testing.T, dsn string) string {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	schema := "devpki_mig_" + hex.EncodeToString(b[:])
	db := rawDB(t, DriverPostgres, dsn)
	if err := db.Exec("CREATE SCHEMA " + schema).Error; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Exec("DROP SCHEMA " + schema + " CASCADE") })
	return dsn + " search_path=" + schema
}

// rawDB is a gorm connection (writer settings on SQLite) closed at the end
// of the test.
func rawDB(t *testing.T, driver, dsn string) *gorm.DB {
	t.Helper()
	d := postgres.Open(dsn)
	if driver == DriverSQLite {
		d = sqlite.Open(sqliteDSN(dsn, true))
	}
	db, err := gorm.Open(d, &gorm.Config{Logger: logger.Discard, TranslateError: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeDB(db) })
	return db
}

// legacyRegistry makes, at dsn, the registry devpki made before versioned
// migrations: the legacy path alone, no version table.
func legacyRegistry(t *testing.T, driver, dsn string) {
	t.Helper()
	s := &Store{driver: driver, w: rawDB(t, driver, dsn), now: time.Now}
	ctx := context.Background()
	if err := s.legacyMigrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.seed(ctx); err != nil {
		t.Fatal(err)
	}
	if s.w.Migrator().HasTable(VersionTable) {
		t.Fatal("the legacy path made a version table")
	}
	closeDB(s.w)
}

// schemaDump describes every table, column, index and constraint of db,
// the version table left out, in a form two databases can be compared by.
func schemaDump(t *testing.T, driver string, db *gorm.DB) []string {
	t.Helper()
	var out []string
	if driver == DriverSQLite {
		var rows []struct{ Type, Name, SQL string }
		if err := db.Raw(`SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'
			AND tbl_name <> ?`, VersionTable).Scan(&rows).Error; err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			out = append(out, r.Type+" "+r.Name+": "+strings.Join(strings.Fields(r.SQL), " "))
		}
	} else {
		var schema string
		if err := db.Raw("SELECT current_schema()").Scan(&schema).Error; err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{
			`SELECT table_name || '.' || column_name || ' ' || data_type || COALESCE('(' || character_maximum_length || ')', '') ||
				' null=' || is_nullable || ' default=' || COALESCE(column_default, '') || ' pos=' || ordinal_position
				FROM information_schema.columns WHERE table_schema = current_schema() AND table_name <> '` + VersionTable + `'`,
			`SELECT 'index ' || indexname || ': ' || indexdef FROM pg_indexes WHERE schemaname = current_schema()
				AND tablename <> '` + VersionTable + `'`,
			`SELECT 'constraint ' || c.conname || ' on ' || r.relname || ': ' || pg_get_constraintdef(c.oid)
				FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid JOIN pg_namespace n ON n.oid = r.relnamespace
				WHERE n.nspname = current_schema() AND r.relname <> '` + VersionTable + `'`,
			`SELECT 'sequence ' || sequence_name FROM information_schema.sequences WHERE sequence_schema = current_schema()`,
		} {
			var lines []string
			if err := db.Raw(q).Scan(&lines).Error; err != nil {
				t.Fatal(err)
			}
			for _, l := range lines {
				out = append(out, strings.ReplaceAll(l, schema+".", ""))
			}
		}
	}
	sort.Strings(out)
	return out
}

// TestBaselineMatchesLegacy: the frozen baseline migration makes exactly
// the schema the legacy path (gorm AutoMigrate and the fixups) makes, on
// both dialects, so a new registry and an upgraded one are the same.
func TestBaselineMatchesLegacy(t *testing.T) {
	dialects(t, func(t *testing.T, driver string, newDB func() string) {
		legacy, fresh := newDB(), newDB()
		legacyRegistry(t, driver, legacy)
		ctx := context.Background()
		s, err := Open(ctx, Options{Driver: driver, DSN: fresh})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		st, err := ReadSchema(ctx, Options{Driver: driver, DSN: fresh})
		if err != nil || st.Current != st.Latest || st.Pending() || st.Legacy || st.Empty {
			t.Fatalf("fresh registry schema %+v, %v; want current at the latest version", st, err)
		}
		// The baseline alone, against the legacy schema.
		base := rawDB(t, driver, newDB())
		sqlDB, _ := base.DB()
		p, err := newProvider(driver, sqlDB)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.UpTo(ctx, BaselineVersion); err != nil {
			t.Fatal(err)
		}
		got, want := schemaDump(t, driver, base), schemaDump(t, driver, rawDB(t, driver, legacy))
		if !reflect.DeepEqual(got, want) {
			t.Errorf("baseline schema differs from the legacy path's:\n%s", diffLines(want, got))
		}
		if len(want) < 30 {
			t.Errorf("schema dump has %d lines; the dump reads nothing", len(want))
		}
	})
}

func diffLines(want, got []string) string {
	in := func(l []string) map[string]bool {
		m := map[string]bool{}
		for _, s := range l {
			m[s] = true
		}
		return m
	}
	w, g := in(want), in(got)
	var b strings.Builder
	for _, s := range want {
		if !g[s] {
			fmt.Fprintf(&b, "- %s\n", s)
		}
	}
	for _, s := range got {
		if !w[s] {
			fmt.Fprintf(&b, "+ %s\n", s)
		}
	}
	return b.String()
}

// TestModelsMatchSchema: once every migration ran, each column of each gorm
// model exists. A model change without its migration fails here.
func TestModelsMatchSchema(t *testing.T) {
	dialects(t, func(t *testing.T, driver string, newDB func() string) {
		dsn := newDB()
		s, err := Open(context.Background(), Options{Driver: driver, DSN: dsn})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		models := append(allModels(), &quarantineRow{}, &heartbeatRow{})
		cache := &sync.Map{}
		for _, m := range models {
			sch, err := schema.Parse(m, cache, s.w.NamingStrategy)
			if err != nil {
				t.Fatal(err)
			}
			if !s.w.Migrator().HasTable(sch.Table) {
				t.Errorf("model %T: no table %s; add a migration (docs/ARCHITECTURE.md)", m, sch.Table)
				continue
			}
			for _, f := range sch.Fields {
				if f.DBName != "" && !s.w.Migrator().HasColumn(m, f.DBName) {
					t.Errorf("model %T: no column %s.%s; add a migration (docs/ARCHITECTURE.md)", m, sch.Table, f.DBName)
				}
			}
		}
	})
}

// TestLegacyUpgrade: a registry made before versioned migrations opens, is
// recorded at the baseline and then migrated to the latest version, its
// data intact; a second replica opening it at the same time waits for the
// first and finds the work done.
func TestLegacyUpgrade(t *testing.T) {
	dialects(t, func(t *testing.T, driver string, newDB func() string) {
		dsn := newDB()
		legacyRegistry(t, driver, dsn)
		ctx := context.Background()
		// Some data, written the old way (no version table).
		raw := rawDB(t, driver, dsn)
		now := time.Now().UTC()
		if err := raw.Exec(`INSERT INTO tenants (id, name, require_tpm, created_at) VALUES ('acme', 'acme', false, ?)`, now).Error; err != nil {
			t.Fatal(err)
		}
		st, err := ReadSchema(ctx, Options{Driver: driver, DSN: dsn})
		if err != nil || !st.Legacy || st.Empty || st.Current != 0 || !st.Pending() {
			t.Fatalf("legacy registry schema %+v, %v; want legacy, pending", st, err)
		}
		// Refused without migrating, and nothing changed.
		if _, err := Open(ctx, Options{Driver: driver, DSN: dsn, Migrate: MigrateNever}); !errors.Is(err, ErrSchemaOutdated) ||
			!strings.Contains(err.Error(), "before versioned migrations") {
			t.Fatalf("Open(MigrateNever) of a legacy registry = %v, want %v", err, ErrSchemaOutdated)
		}
		if raw.Migrator().HasTable(VersionTable) {
			t.Fatal("a refused Open made the version table")
		}

		var applied []AppliedMigration
		var mu sync.Mutex
		var wg sync.WaitGroup
		errs := make([]error, 3)
		for i := range errs {
			wg.Go(func() {
				s, err := Open(ctx, Options{Driver: driver, DSN: dsn, OnMigration: func(a AppliedMigration) {
					mu.Lock()
					applied = append(applied, a)
					mu.Unlock()
				}})
				if err == nil {
					err = s.Close()
				}
				errs[i] = err
			})
			if driver == DriverSQLite {
				wg.Wait() // one process per SQLite file
			}
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		if len(applied) == 0 || applied[0].Version != BaselineVersion {
			t.Fatalf("applied %+v; want the legacy upgrade to the baseline first, once", applied)
		}
		for _, a := range applied[1:] {
			if a.Version == BaselineVersion {
				t.Fatalf("applied %+v: the baseline twice", applied)
			}
		}
		st, err = ReadSchema(ctx, Options{Driver: driver, DSN: dsn})
		if err != nil || st.Legacy || st.Current != st.Latest || st.Pending() {
			t.Fatalf("upgraded schema %+v, %v", st, err)
		}
		for _, m := range st.Migrations {
			if !m.Applied || m.Name == "" {
				t.Errorf("migration %+v not applied after the upgrade", m)
			}
		}
		var versions []int64
		if err := raw.Table(VersionTable).Order("id").Pluck("version_id", &versions).Error; err != nil {
			t.Fatal(err)
		}
		// Version 0 (goose's own row), then each migration once. Numbers
		// are handed out per change, so a branch may lack some.
		want := []int64{0}
		for _, m := range st.Migrations {
			want = append(want, m.Version)
		}
		if !slices.Equal(versions, want) {
			t.Errorf("version table holds %v; want %v, each once", versions, want)
		}
		s, err := Open(ctx, Options{Driver: driver, DSN: dsn, Migrate: MigrateNever})
		if err != nil {
			t.Fatalf("a current registry with MigrateNever: %v", err)
		}
		defer s.Close()
		if ten, err := s.GetTenant(ctx, "acme"); err != nil || ten.ID != "acme" {
			t.Fatalf("tenant written before the upgrade: %+v, %v", ten, err)
		}
	})
}

// TestUpgradeMainRegistry: testdata/registry-before-goose.db is a registry
// made by devpki just before versioned migrations (ca init, two devices
// enrolled with one token, one revoked, through the real binaries). It
// opens, is recorded at the latest version, and keeps its records and a
// verifying audit chain.
func TestUpgradeMainRegistry(t *testing.T) {
	b, err := os.ReadFile("testdata/registry-before-goose.db")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "registry.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := ReadSchema(ctx, Options{DSN: path})
	if err != nil || !st.Legacy {
		t.Fatalf("schema of the old registry: %+v, %v; want legacy", st, err)
	}
	s, err := Open(ctx, Options{DSN: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.VerifyAudit(ctx); err != nil {
		t.Fatalf("audit chain after the upgrade: %v", err)
	}
	devs, err := s.ListDevices(ctx, registry.DeviceFilter{Limit: 10})
	if err != nil || len(devs) != 2 {
		t.Fatalf("devices after the upgrade: %d, %v; want 2", len(devs), err)
	}
	revoked := 0
	for _, d := range devs {
		if d.Status == registry.DeviceRevoked {
			revoked++
		}
	}
	if revoked != 1 {
		t.Errorf("%d revoked devices after the upgrade, want 1", revoked)
	}
	if a, err := s.GetAdmin(ctx, "admin"); err != nil || !a.Super {
		t.Errorf("bootstrap admin after the upgrade: %+v, %v", a, err)
	}
	st, err = ReadSchema(ctx, Options{DSN: path})
	if err != nil || st.Legacy || st.Pending() {
		t.Fatalf("schema after the upgrade: %+v, %v", st, err)
	}
}

// TestSchemaTooNew: a registry a newer devpki migrated (a version this
// binary has no migration for) is refused, naming both versions and what
// to do, and nothing is changed.
func TestSchemaTooNew(t *testing.T) {
	dialects(t, func(t *testing.T, driver string, newDB func() string) {
		dsn := newDB()
		ctx := context.Background()
		s, err := Open(ctx, Options{Driver: driver, DSN: dsn})
		if err != nil {
			t.Fatal(err)
		}
		latest := maxVersion(t, s)
		s.Close()
		raw := rawDB(t, driver, dsn)
		future := latest + 7
		if err := raw.Exec("INSERT INTO "+VersionTable+" (version_id, is_applied) VALUES (?, ?)", future, true).Error; err != nil {
			t.Fatal(err)
		}
		_, err = Open(ctx, Options{Driver: driver, DSN: dsn})
		want := regexp.MustCompile(fmt.Sprintf(`schema version %d, this devpki knows versions up to %d .*upgrade this binary`, future, latest))
		if !errors.Is(err, ErrSchemaTooNew) || !want.MatchString(err.Error()) {
			t.Fatalf("Open of a newer schema = %v; want %v naming %d and %d", err, ErrSchemaTooNew, future, latest)
		}
		st, err := ReadSchema(ctx, Options{Driver: driver, DSN: dsn})
		if err != nil || !st.TooNew() || st.Current != future {
			t.Fatalf("ReadSchema = %+v, %v", st, err)
		}
		if last := st.Migrations[len(st.Migrations)-1]; last.Version != future || last.Name != "" || !last.Applied {
			t.Errorf("unknown applied version listed as %+v", last)
		}
	})
}

// TestMigrateNeverEmpty: MigrateNever on an empty database refuses and
// creates nothing; ReadSchema on a missing SQLite file is an error, and
// creates no file.
func TestMigrateNeverEmpty(t *testing.T) {
	dialects(t, func(t *testing.T, driver string, newDB func() string) {
		dsn := newDB()
		ctx := context.Background()
		if _, err := Open(ctx, Options{Driver: driver, DSN: dsn, Migrate: MigrateNever}); !errors.Is(err, ErrSchemaOutdated) {
			t.Fatalf("Open(MigrateNever) of an empty database = %v", err)
		}
		if driver == DriverSQLite {
			if _, err := os.Stat(dsn); !os.IsNotExist(err) {
				t.Fatalf("refused Open created %s", dsn)
			}
			if _, err := ReadSchema(ctx, Options{DSN: dsn}); err == nil {
				t.Fatal("ReadSchema of a missing file: no error")
			}
			if _, err := os.Stat(dsn); !os.IsNotExist(err) {
				t.Fatalf("ReadSchema created %s", dsn)
			}
			return
		}
		st, err := ReadSchema(ctx, Options{Driver: driver, DSN: dsn})
		if err != nil || !st.Empty || st.Legacy || !st.Pending() {
			t.Fatalf("empty database schema %+v, %v", st, err)
		}
		if rawDB(t, driver, dsn).Migrator().HasTable(VersionTable) {
			t.Fatal("refused Open or ReadSchema made the version table")
		}
	})
}

func maxVersion(t *testing.T, s *Store) int64 {
	t.Helper()
	var v int64
	if err := s.w.Table(VersionTable).Select("MAX(version_id)").Scan(&v).Error; err != nil {
		t.Fatal(err)
	}
	return v
}
