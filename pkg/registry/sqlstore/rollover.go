package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"devpki/pkg/registry"
)

// caIssuerRow is registry.CAIssuer.
type caIssuerRow struct {
	KeyID       string `gorm:"column:key_id;primaryKey;size:64"`
	State       string `gorm:"size:16;not null;index"`
	Kind        string `gorm:"size:16;not null;default:''"`
	CertPEM     string `gorm:"column:cert_pem;not null"`
	RootPEM     string `gorm:"column:root_pem;not null"`
	CrossPEM    string `gorm:"column:cross_pem;not null;default:''"`
	KeyURI      string `gorm:"column:key_uri;not null"`
	RootKeyURI  string `gorm:"column:root_key_uri;not null;default:''"`
	NotAfter    time.Time
	CreatedAt   time.Time
	ActivatedAt *time.Time
	RetiredAt   *time.Time
}

func (caIssuerRow) TableName() string { return "ca_issuers" }

// bundleFetchRow records that a device fetched the trust bundle naming an
// issuer: one row per device and issuer, the last time kept.
type bundleFetchRow struct {
	DeviceID  string    `gorm:"column:device_id;primaryKey;size:128"`
	IssuerKID string    `gorm:"column:issuer_kid;primaryKey;size:64;index:idx_bundle_fetches_issuer_tenant,priority:1"`
	TenantID  string    `gorm:"size:128;not null;index:idx_bundle_fetches_issuer_tenant,priority:2"`
	FetchedAt time.Time `gorm:"not null"`
}

func (bundleFetchRow) TableName() string { return "bundle_fetches" }

func (r *caIssuerRow) domain() *registry.CAIssuer {
	return &registry.CAIssuer{
		KeyID: r.KeyID, State: registry.IssuerState(r.State), Kind: r.Kind,
		CertPEM: r.CertPEM, RootPEM: r.RootPEM, CrossPEM: r.CrossPEM, KeyURI: r.KeyURI, RootKeyURI: r.RootKeyURI,
		NotAfter: r.NotAfter.UTC(), CreatedAt: r.CreatedAt.UTC(), ActivatedAt: utcPtr(r.ActivatedAt), RetiredAt: utcPtr(r.RetiredAt),
	}
}

// ListIssuers returns every CA issuer, oldest first.
func (s *Store) ListIssuers(ctx context.Context) ([]*registry.CAIssuer, error) {
	var rows []caIssuerRow
	if err := s.rd(ctx).Order("created_at, key_id").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: list issuers: %w", translate(err))
	}
	out := make([]*registry.CAIssuer, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// RegisterInitialIssuer records the CA from 'ca init' as the active issuer
// when no issuer is recorded yet, and marks every certificate recorded
// without an issuer as its (they could have come from no other). It
// returns whether it wrote anything; with issuers already recorded it
// changes nothing.
func (s *Store) RegisterInitialIssuer(ctx context.Context, iss *registry.CAIssuer) (bool, error) {
	if iss == nil || iss.KeyID == "" {
		return false, errors.New("sqlstore: register issuer: key id is required")
	}
	var n int64
	if err := s.rd(ctx).Model(&caIssuerRow{}).Count(&n).Error; err != nil {
		return false, fmt.Errorf("sqlstore: register issuer: %w", translate(err))
	}
	if n > 0 {
		return false, nil
	}
	wrote := false
	err := s.write(ctx, func(tx *gorm.DB, _ *batch) error {
		var n int64
		if err := tx.Model(&caIssuerRow{}).Count(&n).Error; err != nil {
			return err
		}
		if n > 0 { // another replica did it first
			return nil
		}
		row := fromIssuer(iss, s.now())
		row.State = string(registry.IssuerActive)
		if err := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(row).Error; err != nil {
			return err
		}
		if err := tx.Exec("UPDATE certificates SET issuer_kid = ? WHERE issuer_kid = ''", iss.KeyID).Error; err != nil {
			return err
		}
		wrote = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("sqlstore: register issuer %s: %w", iss.KeyID, translate(err))
	}
	return wrote, nil
}

func fromIssuer(iss *registry.CAIssuer, now time.Time) *caIssuerRow {
	row := &caIssuerRow{
		KeyID: iss.KeyID, State: string(iss.State), Kind: iss.Kind, CertPEM: iss.CertPEM, RootPEM: iss.RootPEM,
		CrossPEM: iss.CrossPEM, KeyURI: iss.KeyURI, RootKeyURI: iss.RootKeyURI, NotAfter: ts(iss.NotAfter), CreatedAt: ts(iss.CreatedAt),
	}
	if row.CreatedAt.IsZero() {
		row.CreatedAt = ts(now)
	}
	return row
}

// PrepareIssuer records iss as the prepared issuer, with audit, unless an
// issuer is already prepared or a previous one is not retired yet
// (registry.ErrRolloverOrder; nothing written).
func (s *Store) PrepareIssuer(ctx context.Context, iss *registry.CAIssuer, audit *registry.AuditEvent) error {
	if iss == nil || iss.KeyID == "" || iss.CertPEM == "" || iss.RootPEM == "" {
		return errors.New("sqlstore: prepare issuer: key id, certificate and root are required")
	}
	return s.writeAudited(ctx, audit, func(tx *gorm.DB, _ *batch) error {
		var busy []caIssuerRow
		if err := tx.Where("state IN ?", []string{string(registry.IssuerPrepared), string(registry.IssuerPrevious)}).
			Find(&busy).Error; err != nil {
			return fmt.Errorf("sqlstore: prepare issuer: %w", translate(err))
		}
		if len(busy) > 0 {
			b := busy[0]
			if b.State == string(registry.IssuerPrepared) {
				return fmt.Errorf("%w: issuer %s is already prepared: activate it first", registry.ErrRolloverOrder, b.KeyID)
			}
			return fmt.Errorf("%w: issuer %s is still in its overlap: retire it first", registry.ErrRolloverOrder, b.KeyID)
		}
		row := fromIssuer(iss, s.now())
		row.State = string(registry.IssuerPrepared)
		if err := tx.Create(row).Error; err != nil {
			if errors.Is(s.translateSQL(err), registry.ErrAlreadyExists) {
				// Another replica prepared one meanwhile (ux_ca_issuers_state).
				return fmt.Errorf("%w: another issuer was prepared meanwhile: %v", registry.ErrRolloverOrder, err)
			}
			return fmt.Errorf("sqlstore: prepare issuer %s: %w", iss.KeyID, translate(err))
		}
		return nil
	})
}

// ActivateIssuer makes the prepared issuer keyID active and the active one
// previous, with audit, in one transaction; registry.ErrRolloverOrder when
// keyID is not prepared.
func (s *Store) ActivateIssuer(ctx context.Context, keyID string, at time.Time, audit *registry.AuditEvent) error {
	return s.writeAudited(ctx, audit, func(tx *gorm.DB, _ *batch) error {
		var n int64
		if err := tx.Model(&caIssuerRow{}).Where("key_id = ? AND state = ?", keyID, string(registry.IssuerPrepared)).Count(&n).Error; err != nil {
			return fmt.Errorf("sqlstore: activate issuer %s: %w", keyID, translate(err))
		}
		if n != 1 {
			return fmt.Errorf("%w: issuer %s is not prepared", registry.ErrRolloverOrder, keyID)
		}
		// Demote first: ux_ca_issuers_state allows one active at a time.
		if err := tx.Model(&caIssuerRow{}).Where("key_id <> ? AND state = ?", keyID, string(registry.IssuerActive)).
			Update("state", string(registry.IssuerPrevious)).Error; err != nil {
			return fmt.Errorf("sqlstore: activate issuer %s: %w", keyID, translate(err))
		}
		res := tx.Model(&caIssuerRow{}).Where("key_id = ? AND state = ?", keyID, string(registry.IssuerPrepared)).
			Updates(map[string]any{"state": string(registry.IssuerActive), "activated_at": ts(at)})
		if res.Error != nil {
			return fmt.Errorf("sqlstore: activate issuer %s: %w", keyID, translate(res.Error))
		}
		if res.RowsAffected != 1 {
			return fmt.Errorf("%w: issuer %s is not prepared", registry.ErrRolloverOrder, keyID)
		}
		return nil
	})
}

// RetireIssuer retires the previous issuer keyID, with audit;
// registry.ErrRolloverOrder when it is not previous.
func (s *Store) RetireIssuer(ctx context.Context, keyID string, at time.Time, audit *registry.AuditEvent) error {
	return s.writeAudited(ctx, audit, func(tx *gorm.DB, _ *batch) error {
		res := tx.Model(&caIssuerRow{}).Where("key_id = ? AND state = ?", keyID, string(registry.IssuerPrevious)).
			Updates(map[string]any{"state": string(registry.IssuerRetired), "retired_at": ts(at)})
		if res.Error != nil {
			return fmt.Errorf("sqlstore: retire issuer %s: %w", keyID, translate(res.Error))
		}
		if res.RowsAffected != 1 {
			return fmt.Errorf("%w: issuer %s is not in its overlap", registry.ErrRolloverOrder, keyID)
		}
		return nil
	})
}

// RecordBundleFetch records that deviceID fetched the trust bundle naming
// issuerKID at at (its tenant read from the device); a later fetch moves
// the time. An unknown device records nothing.
func (s *Store) RecordBundleFetch(ctx context.Context, deviceID, issuerKID string, at time.Time) error {
	err := s.write(ctx, func(tx *gorm.DB, _ *batch) error {
		return tx.Exec(`INSERT INTO bundle_fetches (device_id, issuer_kid, tenant_id, fetched_at)
			SELECT id, ?, tenant_id, ? FROM devices WHERE id = ?
			ON CONFLICT (device_id, issuer_kid) DO UPDATE SET fetched_at = excluded.fetched_at`, issuerKID, ts(at), deviceID).Error
	})
	if err != nil {
		return fmt.Errorf("sqlstore: record bundle fetch of %s: %w", deviceID, translate(err))
	}
	return nil
}

// onIssuerQuery counts, per tenant, the devices holding an active
// certificate of an issuer (first argument) valid at a time (second): the
// status is a literal so that the partial index idx_certificates_issuer
// (active certificates only, migration 00008) serves it.
func (s *Store) onIssuerQuery() string {
	return "SELECT tenant_id, COUNT(DISTINCT device_id) AS n FROM " + s.certificatesBy("", "idx_certificates_issuer") +
		" WHERE issuer_kid = ? AND status = '" + string(registry.CertActive) + "' AND device_id IS NOT NULL AND not_after > ?" +
		" GROUP BY tenant_id"
}

// sqlActiveDevicesByTenant counts the devices of a status (the argument)
// per tenant: a scan of the covering idx_devices_tenant_status_id (the
// (status, tenant_id) index that served it alone was dropped by migration
// 00012: every enrollment wrote it).
const sqlActiveDevicesByTenant = "SELECT tenant_id, COUNT(*) AS n FROM devices WHERE status = ? GROUP BY tenant_id"

// RolloverStatus counts, per tenant with active devices, the active
// devices, those holding an active certificate of issuerKID valid at now,
// and those that fetched its trust bundle. Three grouped index scans.
func (s *Store) RolloverStatus(ctx context.Context, issuerKID string, now time.Time) ([]registry.RolloverTenant, error) {
	db := s.rd(ctx)
	type count struct {
		TenantID string
		N        int64
	}
	var devices, onIssuer, fetched []count
	if err := db.Raw(sqlActiveDevicesByTenant, string(registry.DeviceActive)).Scan(&devices).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: rollover status: devices: %w", translate(err))
	}
	if err := db.Raw(s.onIssuerQuery(), issuerKID, ts(now)).Scan(&onIssuer).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: rollover status: certificates: %w", translate(err))
	}
	if err := db.Model(&bundleFetchRow{}).Select("tenant_id, COUNT(*) AS n").
		Where("issuer_kid = ?", issuerKID).Group("tenant_id").Scan(&fetched).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: rollover status: bundle fetches: %w", translate(err))
	}
	byTenant := map[string]*registry.RolloverTenant{}
	var order []string
	get := func(id string) *registry.RolloverTenant {
		t := byTenant[id]
		if t == nil {
			t = &registry.RolloverTenant{TenantID: id}
			byTenant[id] = t
			order = append(order, id)
		}
		return t
	}
	for _, c := range devices {
		get(c.TenantID).Devices = c.N
	}
	for _, c := range onIssuer {
		get(c.TenantID).OnIssuer = c.N
	}
	for _, c := range fetched {
		get(c.TenantID).FetchedBundle = c.N
	}
	out := make([]registry.RolloverTenant, 0, len(order))
	for _, id := range order {
		out = append(out, *byTenant[id])
	}
	return out, nil
}
