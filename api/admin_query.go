package api

import (
	"context"
	"encoding/pem"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// routesAdminQuery adds the admin routes that list and inspect the registry
// (every role), rotate a device and issue component certificates (admin),
// and read the audit log (every role). Everything is scoped to the caller's
// tenant.
func (s *Server) routesAdminQuery(g *echo.Group) {
	anyRole := s.requireRole(registry.RoleAdmin, registry.RoleOperator, registry.RoleAuditor)
	g.GET("/devices", s.listDevices, anyRole)
	g.GET("/devices/:id", s.getDevice, anyRole)
	g.GET("/certificates", s.listCertificates, anyRole)
	g.GET("/certificates/:serial", s.getCertificate, anyRole)
	g.GET("/audit", s.listAudit, anyRole)
	g.POST("/devices/:id/rotate", s.rotateDevice, s.requireRole(registry.RoleAdmin))
	g.POST("/devices/:id/reinstate", s.reinstateDevice, s.requireRole(registry.RoleAdmin))
	g.POST("/certificates", s.issueCertificate, s.requireRole(registry.RoleAdmin))
	s.routesQuarantine(g)
}

// badArg is a query or body field that does not decode.
func badArg(format string, args ...any) error {
	return &requestError{fmt.Errorf("%w: %s", provision.ErrInvalidArgument, fmt.Sprintf(format, args...))}
}

func queryLimit(c echo.Context) (int, error) {
	v := c.QueryParam("limit")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		return 0, badArg("limit %q must be a number from 1 to 1000", v)
	}
	return n, nil
}

func (s *Server) listDevices(c echo.Context) error {
	limit, err := queryLimit(c)
	if err != nil {
		return err
	}
	tenantID, err := s.scopeTenant(c)
	if err != nil {
		return err
	}
	f := registry.DeviceFilter{
		TenantID: tenantID, Status: registry.DeviceStatus(c.QueryParam("status")),
		Serial: c.QueryParam("serial"), After: c.QueryParam("after"), Limit: limit,
	}
	switch f.Status {
	case "", registry.DeviceActive, registry.DeviceRevoked:
	case registry.DeviceQuarantined:
		// Claims held for an admin as possible clones: no devices.
		if m := c.QueryParam("mac"); m != "" {
			return badArg("mac does not apply to status quarantined")
		}
		return s.listQuarantined(c, tenantID, f.Serial, f.After, limit)
	default:
		return badArg("status %q is not active, revoked or quarantined", f.Status)
	}
	if m := c.QueryParam("mac"); m != "" {
		if f.MAC, err = pki.NormalizeMAC(m); err != nil {
			return badArg("mac %q: %v", m, err)
		}
	}
	devs, err := s.cfg.Store.ListDevices(c.Request().Context(), f)
	if err != nil {
		return err
	}
	tenant, err := s.tenantName(c.Request().Context(), tenantID)
	if err != nil {
		return err
	}
	out := wire.DeviceList{Devices: make([]wire.Device, 0, len(devs))}
	for _, d := range devs {
		out.Devices = append(out.Devices, deviceView(d, tenant))
	}
	if len(devs) > 0 && len(devs) == effectiveLimit(limit) {
		out.Next = devs[len(devs)-1].ID
	}
	return c.JSON(http.StatusOK, out)
}

func effectiveLimit(n int) int {
	if n == 0 {
		return 100
	}
	return n
}

func (s *Server) getDevice(c echo.Context) error {
	d, err := s.cfg.Store.GetDevice(c.Request().Context(), c.Param("id"))
	if err == nil && !provision.InScope(s.actor(c), d.TenantID) {
		err = registry.ErrNotFound
	}
	if err != nil {
		return notFound(fmt.Errorf("no device %q in your tenant: %w", c.Param("id"), err))
	}
	return s.device(c, d)
}

// device answers with d.
func (s *Server) device(c echo.Context, d *registry.Device) error {
	tenant, err := s.tenantName(c.Request().Context(), d.TenantID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, deviceView(d, tenant))
}

func (s *Server) listCertificates(c echo.Context) error {
	limit, err := queryLimit(c)
	if err != nil {
		return err
	}
	tenantID, err := s.scopeTenant(c)
	if err != nil {
		return err
	}
	f := registry.CertFilter{
		TenantID: tenantID, DeviceID: c.QueryParam("device"), Kind: registry.CertKind(c.QueryParam("kind")),
		Status: registry.CertStatus(c.QueryParam("status")), After: c.QueryParam("after"), Limit: limit,
	}
	switch f.Status {
	case "", registry.CertActive, registry.CertSuperseded, registry.CertRevoked:
	default:
		return badArg("status %q is not active, superseded or revoked", f.Status)
	}
	if v := c.QueryParam("expiring_before"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return badArg("expiring_before %q is not an RFC 3339 time", v)
		}
		f.ExpiringBefore = t
	}
	if f.After != "" && f.ByExpiry() {
		if _, _, err := registry.ExpiryCursor(f.After); err != nil {
			return badArg("after: %v", err)
		}
	}
	certs, err := s.cfg.Store.ListCertificates(c.Request().Context(), f)
	if err != nil {
		return err
	}
	out := wire.CertificateList{Certificates: make([]wire.Certificate, 0, len(certs))}
	for _, r := range certs {
		out.Certificates = append(out.Certificates, certView(r, false))
	}
	if len(certs) > 0 && len(certs) == effectiveLimit(limit) {
		out.Next = f.Cursor(certs[len(certs)-1])
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) getCertificate(c echo.Context) error {
	r, err := s.cfg.Store.GetCertificate(c.Request().Context(), c.Param("serial"))
	if err == nil && !provision.InScope(s.actor(c), r.TenantID) {
		err = registry.ErrNotFound
	}
	if err != nil {
		return notFound(fmt.Errorf("no certificate %q in your tenant: %w", c.Param("serial"), err))
	}
	return c.JSON(http.StatusOK, certView(r, true))
}

func (s *Server) listAudit(c echo.Context) error {
	after, want, err := pageArgs(c, "a sequence number")
	if err != nil {
		return err
	}
	evs, next, err := scopedPage(c.Request().Context(), s.actor(c), after, want, s.cfg.Store.ListAudit,
		func(ev *registry.AuditEvent) (int64, string) { return ev.Seq, ev.TenantID })
	if err != nil {
		return err
	}
	out := wire.AuditList{Events: []wire.AuditEvent{}, Next: next}
	for _, ev := range evs {
		out.Events = append(out.Events, wire.AuditEvent{
			Seq: ev.Seq, Time: ev.Time, Tenant: ev.TenantID, Actor: ev.Actor, Action: ev.Action, Target: ev.Target,
			Result: ev.Result, Detail: ev.Detail, SourceAddr: ev.SourceAddr, Hash: fmt.Sprintf("%x", ev.Hash),
		})
	}
	return c.JSON(http.StatusOK, out)
}

// pageArgs reads ?after=N (an id of what, non-negative) and ?limit=N.
func pageArgs(c echo.Context, what string) (after int64, want int, err error) {
	limit, err := queryLimit(c)
	if err != nil {
		return 0, 0, err
	}
	if v := c.QueryParam("after"); v != "" {
		if after, err = strconv.ParseInt(v, 10, 64); err != nil || after < 0 {
			return 0, 0, badArg("after %q is not %s", v, what)
		}
	}
	return after, effectiveLimit(limit), nil
}

// scopedPage reads a log shared by every tenant (read: entries with an id
// above after, in id order) in chunks, and keeps the entries in who's scope
// (key gives an entry's id and tenant) up to want. next is the id to go on
// from when the page is full, else 0.
func scopedPage[T any](ctx context.Context, who provision.Actor, after int64, want int,
	read func(ctx context.Context, after int64, limit int) ([]T, error), key func(T) (int64, string)) (page []T, next int64, err error) {
	const chunk = 500
	for len(page) < want {
		items, err := read(ctx, after, chunk)
		if err != nil {
			return nil, 0, err
		}
		for _, it := range items {
			id, tenant := key(it)
			after = id
			if !provision.InScope(who, tenant) {
				continue
			}
			if page = append(page, it); len(page) == want {
				return page, id, nil
			}
		}
		if len(items) < chunk {
			break
		}
	}
	return page, 0, nil
}

// rotateDevice is POST /v1/admin/devices/:id/rotate.
func (s *Server) rotateDevice(c echo.Context) error {
	var req wire.RotateRequest
	if c.Request().ContentLength != 0 {
		if err := decodeJSON(c, &req); err != nil {
			return err
		}
	}
	d, err := s.cfg.Admin.RotateDevice(c.Request().Context(), s.actor(c), c.Param("id"), req.Deadline)
	if err != nil {
		return err
	}
	return s.device(c, d)
}

// reinstateDevice is POST /v1/admin/devices/:id/reinstate: a revoked
// device becomes active again; its certificates stay revoked, and a token
// bound to its serial (or its TPM's attestation) re-enrolls it.
func (s *Server) reinstateDevice(c echo.Context) error {
	d, err := s.cfg.Admin.ReinstateDevice(c.Request().Context(), s.actor(c), c.Param("id"))
	if err != nil {
		return err
	}
	return s.device(c, d)
}

func (s *Server) issueCertificate(c echo.Context) error {
	var req wire.IssueRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if req.Usage != "server" && req.Usage != "client" {
		return badArg("usage %q must be server or client", req.Usage)
	}
	var life time.Duration
	if req.Lifetime != "" {
		d, err := time.ParseDuration(req.Lifetime)
		if err != nil {
			return badArg("lifetime %q is not a Go duration such as 720h", req.Lifetime)
		}
		life = d
	}
	res, err := s.cfg.Provision.IssueComponent(c.Request().Context(), &provision.ComponentRequest{
		CSRPEM: []byte(req.CSR), Server: req.Usage == "server", CommonName: req.CommonName,
		DNSNames: req.DNSNames, IPs: req.IPs, Lifetime: life,
		Who: s.actor(c),
	})
	if err != nil {
		return err
	}
	return s.issued(c, res)
}

func deviceView(d *registry.Device, tenant string) wire.Device {
	return wire.Device{
		ID: d.ID, Tenant: tenant, Serial: d.Serial, MACs: d.MACs, Status: string(d.Status), Method: d.Method,
		IDevIDIssuer: d.IDevIDIssuer, IDevIDSerial: d.IDevIDSerial,
		RekeyRequired: d.RekeyRequired, RekeyDeadline: d.RekeyDeadline, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt,
	}
}

func certView(r *registry.Certificate, withPEM bool) wire.Certificate {
	v := wire.Certificate{
		Serial: r.Serial, Kind: string(r.Kind), DeviceID: r.DeviceID, Subject: r.Subject, SANs: r.SANs,
		NotBefore: r.NotBefore, NotAfter: r.NotAfter, Status: string(r.Status), RevokedAt: r.RevokedAt,
		RevocationReason: r.RevocationReason, ReplacesSerial: r.ReplacesSerial,
	}
	if withPEM {
		v.PEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.DER}))
	}
	return v
}
