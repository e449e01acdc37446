package provision

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"devpki/pkg/registry"
)

// RekeyStore is what EnforceRekeyDeadlines reads and writes.
// *sqlstore.Store implements it.
type RekeyStore interface {
	ListDevices(ctx context.Context, f registry.DeviceFilter) ([]*registry.Device, error)
	ListCertificates(ctx context.Context, f registry.CertFilter) ([]*registry.Certificate, error)
	RequireRekey(ctx context.Context, deviceID string, required bool, deadline *time.Time, audit *registry.AuditEvent) error
}

// EnforceRekeyDeadlines revokes the unexpired certificates of every device
// that was told to re-key (an admin's rotate) and let its deadline pass; the
// device stays in the registry (a token bound to its serial re-enrolls it),
// its deadline is cleared so it is handled once, and each step is audited.
// It returns how many devices it handled.
func EnforceRekeyDeadlines(ctx context.Context, store RekeyStore, rev *Revocation, now time.Time) (int, error) {
	handled := 0
	after := ""
	for {
		devs, err := store.ListDevices(ctx, registry.DeviceFilter{RekeyDueBefore: now, After: after, Limit: 500})
		if err != nil {
			return handled, fmt.Errorf("list devices past their re-key deadline: %w", err)
		}
		if len(devs) == 0 {
			return handled, nil
		}
		for _, d := range devs {
			after = d.ID
			who := SystemActor("rotate", d.TenantID)
			certs, err := store.ListCertificates(ctx, registry.CertFilter{DeviceID: d.ID, Limit: 1000})
			if err != nil {
				return handled, err
			}
			for _, c := range certs {
				if c.Status == registry.CertRevoked || !c.NotAfter.After(now) {
					continue
				}
				if _, err := rev.RevokeCertificate(ctx, who, c.Serial, registry.ReasonSuperseded); err != nil && !errors.Is(err, registry.ErrAlreadyRevoked) {
					return handled, fmt.Errorf("revoke %s of device %s: %w", c.Serial, d.ID, err)
				}
			}
			if err := store.RequireRekey(ctx, d.ID, true, nil, event(who, d.TenantID, ActionRotateDeadline, d.ID, registry.ResultOK,
				fmt.Sprintf("no re-key by %s: certificates revoked", d.RekeyDeadline.UTC().Format(time.RFC3339)))); err != nil {
				return handled, err
			}
			handled++
		}
	}
}

// RunRekeyDeadlines calls EnforceRekeyDeadlines every interval until ctx
// ends.
func RunRekeyDeadlines(ctx context.Context, store RekeyStore, rev *Revocation, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := EnforceRekeyDeadlines(ctx, store, rev, time.Now())
		switch {
		case err != nil && ctx.Err() == nil:
			log.Error("re-key deadlines", "err", err)
		case n > 0:
			log.Info("re-key deadlines passed: certificates revoked", "devices", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
