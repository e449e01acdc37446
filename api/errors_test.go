package api

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// TestClassify pins the answer of every sentinel the pipeline can return,
// wrapped as the packages wrap them: the one place errors become HTTP.
func TestClassify(t *testing.T) {
	wrap := func(errs ...error) error {
		err := errs[len(errs)-1]
		for i := len(errs) - 2; i >= 0; i-- {
			err = fmt.Errorf("%w: %w", errs[i], err)
		}
		return fmt.Errorf("context: %w", err)
	}
	for _, tt := range []struct {
		err    error
		status int
		slug   string
	}{
		{wrap(registry.ErrUnavailable), http.StatusServiceUnavailable, wire.SlugStoreUnavailable},
		{&provision.RateLimitError{Scope: "tenant t", RetryAfter: time.Second}, http.StatusTooManyRequests, wire.SlugRateLimited},
		{wrap(provision.ErrDeviceRevoked), http.StatusConflict, wire.SlugDeviceRevoked},
		{wrap(registry.ErrSerialConflict), http.StatusConflict, wire.SlugSerialConflict},
		{wrap(provision.ErrCloneSuspect), http.StatusForbidden, wire.SlugCloneSuspect},
		{wrap(pki.ErrBadCSR, pki.ErrBadSerial), http.StatusBadRequest, wire.SlugBadSerial},
		{wrap(provision.ErrInvalidArgument, pki.ErrBadSerial), http.StatusBadRequest, wire.SlugBadSerial},
		{wrap(pki.ErrBadCSR, pki.ErrBadMAC), http.StatusBadRequest, wire.SlugBadMAC},
		{wrap(pki.ErrBadCSR), http.StatusBadRequest, wire.SlugBadCSR},
		{wrap(provision.ErrUnauthenticated), http.StatusUnauthorized, wire.SlugUnauthorized},
		{wrap(provision.ErrForbidden), http.StatusForbidden, wire.SlugForbidden},
		{wrap(registry.ErrTokenSpent), http.StatusUnauthorized, wire.SlugTokenSpent},
		{wrap(registry.ErrTokenExpired), http.StatusUnauthorized, wire.SlugTokenExpired},
		{wrap(registry.ErrTokenSerialMismatch), http.StatusForbidden, wire.SlugTokenMismatch},
		{wrap(provision.ErrTPMRequired), http.StatusForbidden, wire.SlugTPMRequired},
		{wrap(provision.ErrIDevIDRequired), http.StatusUnauthorized, wire.SlugIDevIDRequired},
		{wrap(provision.ErrIDevIDUnknownManufacturer), http.StatusForbidden, wire.SlugIDevIDUnknownManufacturer},
		{wrap(provision.ErrIDevIDInvalid), http.StatusForbidden, wire.SlugIDevIDInvalid},
		{wrap(provision.ErrIDevIDSerialMismatch), http.StatusForbidden, wire.SlugIDevIDSerialMismatch},
		{wrap(registry.ErrNotRevoked), http.StatusConflict, wire.SlugConflict},
		{wrap(registry.ErrNotFound), http.StatusNotFound, wire.SlugNotFound},
		{errors.New("anything else"), http.StatusInternalServerError, wire.SlugInternal},
	} {
		status, slug, _, public := classify(tt.err)
		if status != tt.status || slug != tt.slug {
			t.Errorf("classify(%v) = %d %s, want %d %s", tt.err, status, slug, tt.status, tt.slug)
		}
		if public == (status == http.StatusInternalServerError) && status != http.StatusServiceUnavailable {
			t.Errorf("classify(%v): public=%t: only unknown errors (and store faults) keep their detail private", tt.err, public)
		}
	}
}
