package api_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

func TestExpiryForecastAPI(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	auditor := f.apiClient(f.adminCert(f.ca, "default", "x-aud", registry.RoleAuditor, ""))
	f.mustEnroll(f.mint(provision.TokenSpec{}), "SN-EXP-1")
	er, key := f.mustEnroll(f.mint(provision.TokenSpec{}), "SN-EXP-2")

	fc, err := auditor.ExpiryForecast(ctx, url.Values{"within": {"31d"}})
	if err != nil {
		t.Fatal(err)
	}
	if fc.Total != 2 || len(fc.Tenants) != 1 || fc.Tenants[0].Tenant != "default" || len(fc.Tenants[0].Days) != 1 ||
		fc.Tenants[0].Days[0].Count != 2 || fc.OverdueTotal != 0 || fc.Overdue == nil {
		t.Errorf("forecast %+v", fc)
	}
	if fc, err := auditor.ExpiryForecast(ctx, url.Values{"within": {"24h"}}); err != nil || fc.Total != 0 || len(fc.Tenants) != 0 {
		t.Errorf("24h forecast %+v, %v", fc, err)
	}

	before := f.counts()
	for _, q := range []url.Values{
		{}, {"within": {"soon"}}, {"within": {"-3d"}}, {"within": {"0s"}}, {"within": {"1000d"}},
		{"within": {"30d"}, "limit": {"0"}}, {"within": {"30d"}, "limit": {"x"}},
	} {
		_, err := auditor.ExpiryForecast(ctx, q)
		wantStatus(t, err, http.StatusBadRequest, "bad-request")
	}
	_, err = auditor.ExpiryForecast(ctx, url.Values{"within": {"30d"}, "tenant": {"nope"}})
	wantStatus(t, err, http.StatusNotFound, "not-found")
	_, err = f.apiClient(deviceTLSCert(t, er, key)).ExpiryForecast(ctx, url.Values{"within": {"30d"}})
	wantStatus(t, err, http.StatusForbidden, "forbidden")
	if after := f.counts(); after != before {
		t.Errorf("refused forecasts changed the registry: %+v → %+v", before, after)
	}
}
