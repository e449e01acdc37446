// Package sqlstore implements registry.Store on gorm, with SQLite (the
// default, one file, WAL) or PostgreSQL (several CA replicas sharing one
// database).
//
// All writes go through one committer goroutine that groups concurrent
// writes into one transaction (group commit), each write in its own
// savepoint; see Store.Enroll.
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/logger"

	"devpki/pkg/registry"
)

// Drivers accepted in Options.Driver.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
)

// DefaultMaxBatch is the group-commit batch cap used when Options.MaxBatch is 0.
const DefaultMaxBatch = 128

// Options configures Open. The zero value is not usable: DSN is required.
type Options struct {
	// Driver is DriverSQLite (the default when empty) or DriverPostgres.
	Driver string
	// DSN is, for SQLite, the database file path (created if missing; it may
	// carry extra "?" parameters for the mattn driver); for PostgreSQL, a
	// libpq key=value or URL connection string.
	DSN string
	// Now returns the current time; nil means time.Now. It decides token
	// expiry and stamps records and audit events that carry no time.
	Now func() time.Time
	// MaxBatch caps how many writes one group-commit transaction carries;
	// 0 means DefaultMaxBatch, 1 disables grouping.
	MaxBatch int
	// Logger receives gorm's SQL log; nil discards it.
	Logger logger.Interface
	// ReadConns is the size of the read pool; 0 means max(4, GOMAXPROCS).
	ReadConns int
	// AdminConns is the size of the admin lane's read pool (contexts
	// marked by registry.WithAdminLane read there, so that device traffic
	// holding every connection of the read pool does not hold up the admin
	// API); 0 means DefaultAdminConns.
	AdminConns int
	// Linger is how long the committer waits for more writes to join a
	// transaction while the store is busy (its previous transaction held
	// more than one write); 0 means DefaultLinger — DefaultWritersLinger
	// when Writers is set — and negative disables it. An idle store never
	// waits.
	Linger time.Duration
	// Writers, if set, says how many requests are in progress that write
	// through this store (a CA's enrollments and renewals past their door:
	// api.WriterGauge.Writers). A lingering committer then stops waiting as soon
	// as the transaction holds a write for each of them — nobody else is
	// coming — and may wait longer for them (DefaultWritersLinger): fuller
	// transactions under load, no wait for two or three devices at a time.
	Writers func() int
	// MaxBatchTime is how long a group-commit transaction may keep taking
	// the writes of its batch: past it, the transaction commits what it ran
	// and the rest follow in the next. A transaction holds the audit chain
	// head (on PostgreSQL every replica's writers wait for it), so on a
	// slow or shared database this bounds every writer's wait, the admin
	// API's included. 0 means DefaultMaxBatchTime, negative no bound.
	MaxBatchTime time.Duration
	// MaxRefusals caps the stored anonymous-refusal aggregates
	// (RecordRefusal); 0 means registry.DefaultMaxRefusals.
	MaxRefusals int
	// Migrate says what to do with a schema that is behind this binary's
	// (migrate.go); the zero value, MigrateAuto, migrates.
	Migrate MigrateMode
	// OnMigration, when set, is called after each migration Open applies.
	OnMigration func(AppliedMigration)
	// Observer, when set, is told about every group-commit transaction
	// (CommitObserver); nil tells no one.
	Observer CommitObserver
}

// CommitObserver watches the group committer, for metrics: Committed is
// called once per transaction, by the committer goroutine after every
// write of the batch has been answered, with the number of writes it
// carried and how long it took from BEGIN to COMMIT (or to the failure
// that ended it). It must be cheap and not block.
type CommitObserver interface {
	Committed(writes int, took time.Duration)
}

// DefaultAdminConns is Options.AdminConns' default: an operator's console
// or two, each request a few short lookups.
const DefaultAdminConns = 2

// DefaultLinger is the group-commit wait used when Options.Linger is 0.
const DefaultLinger = time.Millisecond

// DefaultWritersLinger is the group-commit wait used when Options.Linger is
// 0 and Options.Writers is set. Each transaction costs a commit — its fsync,
// and the pages every write of it shares (the audit chain's, the tables'
// last pages) written once — so under load a longer wait costs less CPU per
// write; Writers ends it as soon as nobody else is coming.
const DefaultWritersLinger = 8 * time.Millisecond

// lingerRecheck is how often a committer waiting for Writers re-counts
// them: a request may end without writing (refused before the registry).
const lingerRecheck = time.Millisecond

// Store is a registry.Store backed by SQLite or PostgreSQL. Its zero value is
// not usable; call Open.
type Store struct {
	driver   string
	path     string   // the SQLite file; "" on PostgreSQL and in memory (sqliteFile)
	w        *gorm.DB // writes: the committer only (one connection on SQLite)
	r        *gorm.DB // reads, a pool of their own
	ra       *gorm.DB // the admin lane's reads (registry.WithAdminLane), a small pool of their own
	now      func() time.Time
	maxBatch int
	linger   time.Duration
	writers  func() int // Options.Writers; nil: linger the whole time
	// maxBatchTime bounds a transaction's run of ops (cutShort); 0: none.
	maxBatchTime time.Duration
	// maxRefusals caps the audit_refusals rows.
	maxRefusals int

	ops      chan *op
	prio     chan *op     // the admin lane's writes, committed ahead of ops (committer.go)
	mu       sync.RWMutex // guards closed against sends on ops
	closed   bool
	quit     chan struct{}
	loopDone chan struct{}

	batches, batchedOps atomic.Int64

	wsql  *sql.DB   // the writer pool under s.w
	stmts stmtCache // prepared hot-path statements on wsql

	ready      readiness // see Ready
	reads      readStmts // prepared hot lookups on the read pool (reads.go)
	adminReads readStmts // the same on the admin lane's pool

	observer CommitObserver // nil: none
}

var _ registry.Store = (*Store)(nil)

// Open connects, migrates the schema (or refuses, see Options.Migrate), creates the default tenant and the
// audit chain head if missing, and starts the committer.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.DSN == "" {
		return nil, errors.New("sqlstore: open: empty DSN")
	}
	s := &Store{driver: opts.Driver, now: opts.Now, maxBatch: opts.MaxBatch, maxRefusals: opts.MaxRefusals, observer: opts.Observer}
	if s.maxRefusals <= 0 {
		s.maxRefusals = registry.DefaultMaxRefusals
	}
	if s.driver == "" {
		s.driver = DriverSQLite
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.maxBatch <= 0 {
		s.maxBatch = DefaultMaxBatch
	}
	s.writers = opts.Writers
	switch {
	case opts.Linger == 0 && opts.Writers != nil:
		s.linger = DefaultWritersLinger
	case opts.Linger == 0:
		s.linger = DefaultLinger
	case opts.Linger > 0:
		s.linger = opts.Linger
	}
	switch {
	case opts.MaxBatchTime == 0:
		s.maxBatchTime = DefaultMaxBatchTime
	case opts.MaxBatchTime > 0:
		s.maxBatchTime = opts.MaxBatchTime
	}
	readConns := opts.ReadConns
	if readConns <= 0 {
		readConns = max(4, runtime.GOMAXPROCS(0))
	}
	adminConns := opts.AdminConns
	if adminConns <= 0 {
		adminConns = DefaultAdminConns
	}
	log := opts.Logger
	if log == nil {
		log = logger.Discard
	}
	// Reads use gorm's statement cache. Writes do not: inside a transaction
	// gorm re-prepares a cached statement on every use; the committer runs
	// its hot statements through its own cache instead (sqlexec.go).
	cfg := func(prepare bool) *gorm.Config {
		return &gorm.Config{
			Logger:                 log,
			NowFunc:                func() time.Time { return ts(s.now()) },
			SkipDefaultTransaction: true,
			TranslateError:         true,
			PrepareStmt:            prepare,
		}
	}

	var err error
	switch s.driver {
	case DriverSQLite:
		s.path = sqliteFile(opts.DSN)
		if path := sqlitePath(opts.DSN); opts.Migrate == MigrateNever && path != ":memory:" {
			if _, err := os.Stat(path); err != nil {
				return nil, fmt.Errorf("%w: no registry at %s: %w", ErrSchemaOutdated, path, err)
			}
		}
		if err := createPrivate(opts.DSN); err != nil {
			return nil, err
		}
		s.w, err = gorm.Open(sqlite.New(sqlite.Config{DriverName: writerDriver, DSN: sqliteDSN(opts.DSN, true)}), cfg(false))
		if err != nil {
			return nil, fmt.Errorf("sqlstore: open sqlite writer: %w", err)
		}
		if err := setPool(s.w, 1); err != nil {
			return nil, err
		}
		// Migrate before the readers open so the file exists in WAL mode.
		if err := s.migrate(ctx, opts.Migrate, opts.OnMigration); err != nil {
			closeDB(s.w)
			return nil, err
		}
		if s.r, err = openPool(sqlite.New(sqlite.Config{DriverName: readerDriver, DSN: sqliteDSN(opts.DSN, false)}), cfg(true), readConns); err != nil {
			closeDB(s.w)
			return nil, fmt.Errorf("sqlstore: open sqlite readers: %w", err)
		}
		if s.ra, err = openPool(sqlite.New(sqlite.Config{DriverName: readerDriver, DSN: sqliteDSN(opts.DSN, false)}), cfg(true), adminConns); err != nil {
			s.closeAll()
			return nil, fmt.Errorf("sqlstore: open sqlite admin readers: %w", err)
		}
	case DriverPostgres:
		s.w, err = gorm.Open(postgres.Open(withConnectTimeout(opts.DSN)), cfg(false))
		if err != nil {
			return nil, fmt.Errorf("sqlstore: open postgres: %w", err)
		}
		if err := setPool(s.w, readConns+1); err != nil {
			return nil, err
		}
		if err := s.migrate(ctx, opts.Migrate, opts.OnMigration); err != nil {
			closeDB(s.w)
			return nil, err
		}
		// Three pools, so that no kind of work waits for a connection
		// another holds: the committer's (one connection for its
		// transactions, one for the audit log's maintenance), the reads',
		// and the admin lane's. Sharing one pool, a fleet storm's lookups
		// held every connection while the committer and the admin API
		// queued for one.
		if err := setPool(s.w, 2); err != nil {
			closeDB(s.w)
			return nil, err
		}
		if s.r, err = openPool(postgres.Open(withConnectTimeout(opts.DSN)), cfg(true), readConns); err != nil {
			closeDB(s.w)
			return nil, fmt.Errorf("sqlstore: open postgres readers: %w", err)
		}
		if s.ra, err = openPool(postgres.Open(withConnectTimeout(opts.DSN)), cfg(true), adminConns); err != nil {
			s.closeAll()
			return nil, fmt.Errorf("sqlstore: open postgres admin readers: %w", err)
		}
	default:
		return nil, fmt.Errorf("sqlstore: open: unknown driver %q", opts.Driver)
	}

	if s.wsql, err = s.w.DB(); err != nil {
		s.closeAll()
		return nil, err
	}
	if err := s.stmts.prepare(ctx, s); err != nil {
		s.closeAll()
		return nil, err
	}
	s.ops = make(chan *op, s.maxBatch)
	s.prio = make(chan *op, s.maxBatch)
	s.quit = make(chan struct{})
	s.loopDone = make(chan struct{})
	go s.commitLoop()
	return s, nil
}

// createPrivate creates a new SQLite file with mode 0600 (it holds token
// hashes and the audit log); SQLite gives its -wal and -shm files the same
// mode. An existing file is left as it is.
func createPrivate(dsn string) error {
	path := sqlitePath(dsn)
	if path == "" || path == ":memory:" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("sqlstore: create %s: %w", path, err)
	}
	return f.Close()
}

// PostgresConnectTimeout bounds each PostgreSQL connection attempt when the
// DSN (and $PGCONNECT_TIMEOUT) sets no connect_timeout, so that a request
// meeting an unreachable server (a dead host, a dropped SYN) fails as store
// unavailable well within its own timeout instead of waiting out TCP.
const PostgresConnectTimeout = 5 * time.Second

// withConnectTimeout adds connect_timeout to a PostgreSQL DSN (URL or
// key=value) that has none.
func withConnectTimeout(dsn string) string {
	if strings.Contains(dsn, "connect_timeout") || os.Getenv("PGCONNECT_TIMEOUT") != "" {
		return dsn
	}
	secs := strconv.Itoa(int(PostgresConnectTimeout / time.Second))
	if strings.Contains(dsn, "://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return dsn // pgx reports the parse error
		}
		q := u.Query()
		q.Set("connect_timeout", secs)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return strings.TrimSpace(dsn + " connect_timeout=" + secs)
}

// sqlitePath is the file a SQLite DSN names.
func sqlitePath(dsn string) string {
	path, _, _ := strings.Cut(dsn, "?")
	return strings.TrimPrefix(path, "file:")
}

// sqliteFile is the file a SQLite DSN keeps the registry in, "" for an
// in-memory one (":memory:", or mode=memory in its query).
func sqliteFile(dsn string) string {
	path, query, _ := strings.Cut(dsn, "?")
	if path = strings.TrimPrefix(path, "file:"); path == ":memory:" || strings.Contains(query, "mode=memory") {
		return ""
	}
	return path
}

// sqliteDSN adds the mattn pragmas: the writer gets WAL, synchronous=FULL
// (each commit is fsynced before Enroll returns), foreign keys and BEGIN
// IMMEDIATE; readers are query-only.
func sqliteDSN(path string, writer bool) string {
	params := "_busy_timeout=5000&_foreign_keys=on"
	if writer {
		params = "_journal_mode=WAL&_synchronous=FULL&" + params + "&_txlock=immediate"
	} else {
		params += "&_query_only=on"
	}
	if strings.Contains(path, "?") {
		return path + "&" + params
	}
	return path + "?" + params
}

func setPool(db *gorm.DB, n int) error {
	sqlDB, err := db.DB()
	if err != nil {
		return fmt.Errorf("sqlstore: pool: %w", err)
	}
	sqlDB.SetMaxOpenConns(n)
	sqlDB.SetMaxIdleConns(n)
	sqlDB.SetConnMaxLifetime(0)
	sqlDB.SetConnMaxIdleTime(0)
	return nil
}

// openPool opens a gorm pool of n connections.
func openPool(d gorm.Dialector, cfg *gorm.Config, n int) (*gorm.DB, error) {
	db, err := gorm.Open(d, cfg)
	if err != nil {
		return nil, err
	}
	if err := setPool(db, n); err != nil {
		closeDB(db)
		return nil, err
	}
	return db, nil
}

func closeDB(db *gorm.DB) error {
	if db == nil {
		return nil
	}
	sqlDB, err := db.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// Close stops accepting writes, lets the committer finish every write already
// queued, and closes the connections. Calling it again is a no-op.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.quit)
	s.mu.Unlock()
	<-s.loopDone
	return s.closeAll()
}

func (s *Store) closeAll() error {
	s.stmts.closeAll()
	s.closeReads()
	return errors.Join(closeDB(s.w), closeDB(s.r), closeDB(s.ra))
}

// Ping implements registry.Store with a query on the read pool. A database
// that does not answer is registry.ErrUnavailable.
func (s *Store) Ping(ctx context.Context) error {
	var n int
	if err := s.rd(ctx).Raw("SELECT 1").Scan(&n).Error; err != nil {
		return fmt.Errorf("sqlstore: ping: %w", unavailable(err))
	}
	return nil
}

// translate maps gorm's errors to the registry's sentinels; it is the only
// place that knows gorm's error values. A database that cannot answer or
// commit is registry.ErrUnavailable (unavailable.go).
func translate(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, gorm.ErrRecordNotFound):
		return registry.ErrNotFound
	case errors.Is(err, gorm.ErrDuplicatedKey):
		return fmt.Errorf("%w: %w", registry.ErrAlreadyExists, err)
	case errors.Is(err, gorm.ErrForeignKeyViolated):
		return fmt.Errorf("%w: referenced record: %w", registry.ErrNotFound, err)
	}
	return unavailable(err)
}

// translateSQL is translate for the committer's own database/sql
// statements: the dialect's error translation first (unique and foreign-key
// violations), then the registry's sentinels.
func (s *Store) translateSQL(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return registry.ErrNotFound
	}
	if t, ok := s.w.Dialector.(gorm.ErrorTranslator); ok && err != nil {
		err = t.Translate(err)
	}
	return translate(err)
}

// get reads one row into dst from the read pool.
func (s *Store) get(ctx context.Context, what string, dst any, query string, args ...any) error {
	if err := s.rd(ctx).Where(query, args...).Take(dst).Error; err != nil {
		return fmt.Errorf("sqlstore: get %s: %w", what, translate(err))
	}
	return nil
}

// GetTenant implements registry.Store.
func (s *Store) GetTenant(ctx context.Context, name string) (*registry.Tenant, error) {
	var r tenantRow
	if err := s.get(ctx, "tenant "+name, &r, "name = ?", name); err != nil {
		return nil, err
	}
	return r.domain(), nil
}

// GetTenantByID implements registry.Store.
func (s *Store) GetTenantByID(ctx context.Context, id string) (*registry.Tenant, error) {
	var r tenantRow
	if err := s.get(ctx, "tenant id "+id, &r, "id = ?", id); err != nil {
		return nil, err
	}
	return r.domain(), nil
}

// CreateTenant implements registry.Store. An empty t.ID is set to t.Name; a
// zero CreatedAt is set to now.
func (s *Store) CreateTenant(ctx context.Context, t *registry.Tenant, audit *registry.AuditEvent) error {
	if t == nil || t.Name == "" {
		return errors.New("sqlstore: create tenant: empty name")
	}
	row := fromTenant(t)
	if row.ID == "" {
		row.ID = row.Name
	}
	if row.CreatedAt.IsZero() {
		row.CreatedAt = ts(s.now())
	}
	return s.insert(ctx, "tenant "+row.Name, row, audit, func() { t.ID, t.CreatedAt = row.ID, row.CreatedAt })
}

// insert writes row and audit in one op; done runs after commit.
func (s *Store) insert(ctx context.Context, what string, row any, audit *registry.AuditEvent, done func()) error {
	err := s.writeAudited(ctx, audit, func(tx *gorm.DB, _ *batch) error {
		if err := tx.Create(row).Error; err != nil {
			return fmt.Errorf("sqlstore: create %s: %w", what, translate(err))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if done != nil {
		done()
	}
	return nil
}

// CreateToken implements registry.Store. A zero ExpiresAt is stored as it
// is, and such a token is never spendable (registry.Token.Spendable); a zero
// CreatedAt is set to now.
func (s *Store) CreateToken(ctx context.Context, t *registry.Token, audit *registry.AuditEvent) error {
	if t == nil || t.ID == "" || len(t.Hash) == 0 {
		return errors.New("sqlstore: create token: empty id or hash")
	}
	row := fromToken(t)
	if row.CreatedAt.IsZero() {
		row.CreatedAt = ts(s.now())
	}
	return s.insert(ctx, "token "+t.ID, row, audit, func() { t.CreatedAt = row.CreatedAt })
}

// GetToken implements registry.Store.
func (s *Store) GetToken(ctx context.Context, hash []byte) (*registry.Token, error) {
	var r tokenRow
	if err := s.get(ctx, "token", &r, "hash = ?", hash); err != nil {
		return nil, err
	}
	return r.domain(), nil
}

// GetDevice implements registry.Store.
func (s *Store) GetDevice(ctx context.Context, id string) (*registry.Device, error) {
	var r deviceRow
	if err := s.readRow(ctx, "device "+id, sqlGetDevice, r.scanDest(), id); err != nil {
		return nil, err
	}
	return r.domain(), nil
}

// GetDeviceBySerial implements registry.Store: serial is compared on its
// fold (registry.FoldSerial).
func (s *Store) GetDeviceBySerial(ctx context.Context, tenantID, serial string) (*registry.Device, error) {
	var r deviceRow
	err := s.get(ctx, "device "+tenantID+"/"+serial, &r, "tenant_id = ? AND serial_folded = ?", tenantID, registry.FoldSerial(serial))
	if err != nil {
		return nil, err
	}
	return r.domain(), nil
}

// RecordCertificate implements registry.Store. A zero CreatedAt is set to
// now, an empty Status to active.
func (s *Store) RecordCertificate(ctx context.Context, c *registry.Certificate, audit *registry.AuditEvent) error {
	if c == nil || c.Serial == "" {
		return errors.New("sqlstore: record certificate: empty serial")
	}
	row := fromCertificate(c)
	if row.CreatedAt.IsZero() {
		row.CreatedAt = ts(s.now())
	}
	if row.Status == "" {
		row.Status = string(registry.CertActive)
	}
	return s.insert(ctx, "certificate "+c.Serial, row, audit, func() {
		c.CreatedAt, c.Status = row.CreatedAt, registry.CertStatus(row.Status)
	})
}

// GetCertificate implements registry.Store.
func (s *Store) GetCertificate(ctx context.Context, serial string) (*registry.Certificate, error) {
	var r certificateRow
	if err := s.readRow(ctx, "certificate "+serial, sqlGetCertificate, r.scanDest(), serial); err != nil {
		return nil, err
	}
	return r.domain(), nil
}

// GetCertificateAndDevice implements registry.Store.
func (s *Store) GetCertificateAndDevice(ctx context.Context, serial string) (*registry.Certificate, *registry.Device, error) {
	var c certificateRow
	var d deviceRow
	err := s.readRow(ctx, "certificate "+serial, sqlGetCertificateAndDevice, append(c.scanDest(), d.scanDest()...), serial)
	if errors.Is(err, registry.ErrNotFound) {
		// No certificate, or one without a device.
		cert, err := s.GetCertificate(ctx, serial)
		return cert, nil, err
	}
	if err != nil {
		return nil, nil, err
	}
	return c.domain(), d.domain(), nil
}

// ListDeviceCertificates implements registry.Store: oldest first.
func (s *Store) ListDeviceCertificates(ctx context.Context, deviceID string) ([]*registry.Certificate, error) {
	var rows []certificateRow
	err := s.rdBounded(ctx).Where("device_id = ?", deviceID).Order("created_at, serial").Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list certificates of %s: %w", deviceID, translate(err))
	}
	out := make([]*registry.Certificate, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// PutAdmin implements registry.Store: it inserts or replaces the admin named
// a.Name. A zero CreatedAt is set to now.
func (s *Store) PutAdmin(ctx context.Context, a *registry.Admin, audit *registry.AuditEvent) error {
	if a == nil || a.Name == "" {
		return errors.New("sqlstore: put admin: empty name")
	}
	row := fromAdmin(a)
	if row.CreatedAt.IsZero() {
		row.CreatedAt = ts(s.now())
	}
	return s.writeAudited(ctx, audit, func(tx *gorm.DB, _ *batch) error {
		err := tx.Clauses(clause.OnConflict{
			Columns:   []clause.Column{{Name: "name"}},
			DoUpdates: clause.AssignmentColumns([]string{"tenant_id", "role", "super"}),
		}).Create(row).Error
		if err != nil {
			return fmt.Errorf("sqlstore: put admin %s: %w", a.Name, translate(err))
		}
		return nil
	})
}

// GetAdmin implements registry.Store.
func (s *Store) GetAdmin(ctx context.Context, name string) (*registry.Admin, error) {
	var r adminRow
	if err := s.get(ctx, "admin "+name, &r, "name = ?", name); err != nil {
		return nil, err
	}
	return r.domain(), nil
}

// PutPreregistration implements registry.Store.
func (s *Store) PutPreregistration(ctx context.Context, p *registry.Preregistration, audit *registry.AuditEvent) error {
	if p == nil || p.EKHash == "" || p.TenantID == "" || p.Serial == "" {
		return errors.New("sqlstore: put preregistration: EK hash, tenant and serial are required")
	}
	row := &preregistrationRow{
		EKHash: p.EKHash, TenantID: p.TenantID, Serial: p.Serial, MACs: encodeList(p.MACs),
		CreatedBy: p.CreatedBy, CreatedAt: ts(p.CreatedAt),
	}
	if row.CreatedAt.IsZero() {
		row.CreatedAt = ts(s.now())
	}
	return s.insert(ctx, "preregistration "+p.EKHash, row, audit, func() { p.CreatedAt = row.CreatedAt })
}

// GetPreregistration implements registry.Store.
func (s *Store) GetPreregistration(ctx context.Context, ekHash string) (*registry.Preregistration, error) {
	var r preregistrationRow
	if err := s.get(ctx, "preregistration "+ekHash, &r, "ek_hash = ?", ekHash); err != nil {
		return nil, err
	}
	return &registry.Preregistration{
		EKHash: r.EKHash, TenantID: r.TenantID, Serial: r.Serial, MACs: decodeList(r.MACs),
		CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt.UTC(),
	}, nil
}
