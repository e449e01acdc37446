package provision

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"devpki/pkg/registry"
)

// MaxForecastWithin is the longest expiry forecast: a year and a day.
const MaxForecastWithin = 366 * 24 * time.Hour

// ParseWithin reads the window of an expiry forecast: a number of days
// ("30d") or a Go duration ("72h"), positive and at most
// MaxForecastWithin. It is the one rule for 'ca certs expiring --within'
// and the API's within parameter.
func ParseWithin(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			return 0, fmt.Errorf("%w: within %q is not a number of days such as 30d or a duration such as 72h", ErrInvalidArgument, s)
		}
		d = time.Duration(n) * 24 * time.Hour
		if n > int(MaxForecastWithin/(24*time.Hour)) {
			d = MaxForecastWithin + 1
		}
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("%w: within %q is not a number of days such as 30d or a duration such as 72h", ErrInvalidArgument, s)
		}
	}
	switch {
	case d <= 0:
		return 0, fmt.Errorf("%w: within %q must be positive (a window from now into the future)", ErrInvalidArgument, s)
	case d > MaxForecastWithin:
		return 0, fmt.Errorf("%w: within %q is longer than %dd", ErrInvalidArgument, s, MaxForecastWithin/(24*time.Hour))
	}
	return d, nil
}

// ForecastReader is what ExpiryForecast reads. *sqlstore.Store implements
// it, with index range counts (no scan of the whole registry).
type ForecastReader interface {
	CountExpiringByTenant(ctx context.Context, f registry.ExpiryFilter) (map[string]int64, error)
	ListOverdue(ctx context.Context, f registry.ExpiryFilter, now time.Time) ([]*registry.OverdueCert, int64, error)
}

// Forecast is what ExpiryForecast found: the active device certificates
// (one per device: superseded and revoked ones do not count) expiring in
// [From, To), per tenant and per UTC day, and the devices that will miss
// their renewal window.
type Forecast struct {
	From, To time.Time
	// Days counts per tenant id and UTC day (the day's midnight); days
	// with none are left out. Sorted by tenant, then day.
	Days []ForecastDay
	// Overdue are the devices whose renewal window opened (RenewAfter of
	// their certificate passed) without the CA seeing them since: the
	// registry sees a device only when it enrolls or renews, so its last
	// contact is its certificate's issuance. A device silent that long
	// has been offline for longer than its certificate has left, and
	// expires unless it comes back. Soonest expiry first, at most the
	// limit asked; OverdueTotal counts them all.
	Overdue      []*registry.OverdueCert
	OverdueTotal int64
}

// ForecastDay is one tenant's count of expiring certificates on one day.
type ForecastDay struct {
	TenantID string
	Day      time.Time
	Count    int64
}

// ExpiryForecast forecasts the expiries of the next within in tenantID,
// or, when tenantID is empty, in every tenant who may see (a super-admin:
// all; another admin: its own). limit caps the overdue devices listed (0:
// 100, at most 1000). The caller checks tenantID is in who's scope.
func ExpiryForecast(ctx context.Context, st ForecastReader, who Actor, tenantID string, within time.Duration, limit int, now time.Time) (*Forecast, error) {
	if within <= 0 || within > MaxForecastWithin {
		return nil, fmt.Errorf("%w: within %s is not in (0, %s]", ErrInvalidArgument, within, MaxForecastWithin)
	}
	if tenantID == "" && !who.Super {
		tenantID = who.TenantID
		if tenantID == "" {
			tenantID = registry.DefaultTenant
		}
	}
	if tenantID != "" && !InScope(who, tenantID) {
		return nil, fmt.Errorf("no tenant %s in your scope: %w", tenantID, registry.ErrNotFound)
	}
	now = now.UTC()
	fc := &Forecast{From: now, To: now.Add(within)}
	// One index range count per day: the per-day grouping stays portable
	// and each count reads only that day's slice of the index.
	for start := fc.From; start.Before(fc.To); {
		day := start.Truncate(24 * time.Hour)
		end := day.Add(24 * time.Hour)
		if end.After(fc.To) {
			end = fc.To
		}
		per, err := st.CountExpiringByTenant(ctx, registry.ExpiryFilter{TenantID: tenantID, From: start, To: end})
		if err != nil {
			return nil, fmt.Errorf("count certificates expiring on %s: %w", day.Format(time.DateOnly), err)
		}
		for t, n := range per {
			if n > 0 {
				fc.Days = append(fc.Days, ForecastDay{TenantID: t, Day: day, Count: n})
			}
		}
		start = end
	}
	sort.Slice(fc.Days, func(i, j int) bool {
		a, b := fc.Days[i], fc.Days[j]
		if a.TenantID != b.TenantID {
			return a.TenantID < b.TenantID
		}
		return a.Day.Before(b.Day)
	})
	var err error
	fc.Overdue, fc.OverdueTotal, err = st.ListOverdue(ctx, registry.ExpiryFilter{TenantID: tenantID, From: fc.From, To: fc.To, Limit: limit}, now)
	if err != nil {
		return nil, fmt.Errorf("list devices overdue for renewal: %w", err)
	}
	return fc, nil
}
