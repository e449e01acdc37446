// Command seed fills a devpki registry with devices holding real
// certificates, for measuring the CA at fleet scale (docs/BENCHMARKS.md, "A
// million devices"):
//
//	go run ./test/seed -config DIR/ca.yaml -devices 1000000 -revoked 100000 [-tenants 10]
//
// It reads the registry (SQLite or PostgreSQL) and the issuing CA from
// ca.yaml, signs one certificate per device with the CA's issuing key
// (pkg/pki Issuer, a few goroutines) and records each device through the
// store's own enrollment path (sqlstore Enroll: device, MAC, certificate and
// a hash-chained audit event, grouped into large transactions by the store's
// group commit), then revokes -revoked devices through the store's
// RevokeDevice, each with its audit event: 'ca audit verify' checks the
// result like any registry. The audit events name the seeder as their
// actor (system:seed) so seeded history is never mistaken for real.
//
// Devices are deterministic in their index: serial GW<model>-<batch>-<index>,
// one MAC (every tenth device two) under a few vendor OUIs, a device id
// derived from tenant and serial, and certificates issued at a time spread
// over the past lifetime, so expiry is spread over the coming one. That
// makes a run resumable: an interrupted seed started again with -force
// skips the devices already there (serial conflict) and the revocations
// already made.
//
// Each device gets a fresh P-256 key unless -keys N makes it share one of N
// pregenerated keys (faster; the registry then holds N distinct keys).
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/bits"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/schollz/progressbar/v3"

	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/registry/sqlstore"
)

type options struct {
	config   string
	devices  int
	revoked  int
	tenants  int
	signers  int
	inflight int
	keys     int
	force    bool
	quiet    bool
}

func main() {
	var o options
	flag.StringVar(&o.config, "config", "", "the CA's ca.yaml (its registry and issuing key are used)")
	flag.IntVar(&o.devices, "devices", 1000, "devices to enroll, each with one certificate")
	flag.IntVar(&o.revoked, "revoked", 0, "of those, devices to revoke (spread evenly over them)")
	flag.IntVar(&o.tenants, "tenants", 1, "tenants to spread the devices over: 1 is the default tenant; N > 1 makes tenants seed-01 .. seed-N")
	flag.IntVar(&o.signers, "signers", runtime.GOMAXPROCS(0), "goroutines signing certificates")
	flag.IntVar(&o.inflight, "inflight", 512, "enrollments handed to the store at once (its group commit batches them)")
	flag.IntVar(&o.keys, "keys", 0, "share N pregenerated device keys (0: a fresh key per device)")
	flag.BoolVar(&o.force, "force", false, "seed into a registry that already holds devices (also: resume an interrupted seed with the same flags)")
	flag.BoolVar(&o.quiet, "quiet", false, "no progress bar (the summary is still printed)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "seed:", err)
		os.Exit(1)
	}
}

// Limits that keep a run bounded (and the serial format fixed-width).
const (
	maxDevices = 10_000_000
	maxTenants = 99
)

func (o options) check() error {
	switch {
	case o.config == "":
		return errors.New("-config is required: the ca.yaml of a CA made with 'ca init'")
	case o.devices < 1 || o.devices > maxDevices:
		return fmt.Errorf("-devices %d: must be 1 to %d", o.devices, maxDevices)
	case o.revoked < 0 || o.revoked > o.devices:
		return fmt.Errorf("-revoked %d: must be 0 to -devices (%d)", o.revoked, o.devices)
	case o.tenants < 1 || o.tenants > maxTenants:
		return fmt.Errorf("-tenants %d: must be 1 to %d", o.tenants, maxTenants)
	case o.signers < 1 || o.signers > 256:
		return fmt.Errorf("-signers %d: must be 1 to 256", o.signers)
	case o.inflight < 1 || o.inflight > 8192:
		return fmt.Errorf("-inflight %d: must be 1 to 8192", o.inflight)
	case o.keys < 0 || o.keys > 100_000:
		return fmt.Errorf("-keys %d: must be 0 (a fresh key each) to 100000", o.keys)
	}
	return nil
}

// seedActor is the actor of every seeded audit event.
var seedActor = provision.Actor{Kind: provision.ActorSystem, ID: "seed"}

func run(ctx context.Context, o options, stdout, stderr io.Writer) error {
	if err := o.check(); err != nil {
		return err
	}
	cfg, err := loadConfig(o.config)
	if err != nil {
		return err
	}
	issuer, err := cfg.issuer(ctx)
	if err != nil {
		return err
	}
	// Large group-commit transactions: the seeder is the only writer.
	store, err := sqlstore.Open(ctx, sqlstore.Options{Driver: cfg.driver(), DSN: cfg.dsn(), MaxBatch: 1024, Linger: 5 * time.Millisecond})
	if err != nil {
		return fmt.Errorf("open the registry of %s: %w (is the database reachable? for SQLite, is no other process migrating it?)", o.config, err)
	}
	defer store.Close()
	if !o.force {
		devs, err := store.ListDevices(ctx, registry.DeviceFilter{Limit: 1})
		if err != nil {
			return fmt.Errorf("read the registry: %w", err)
		}
		if len(devs) > 0 {
			return fmt.Errorf("the registry of %s already holds devices (%s, serial %q): seed an empty registry (a new 'ca init --dir'), "+
				"or pass -force to add to it — with the same flags, -force also resumes an interrupted seed", o.config, devs[0].ID, devs[0].Serial)
		}
	}
	tenants, err := ensureTenants(ctx, store, o.tenants)
	if err != nil {
		return err
	}
	s := &seeder{o: o, cfg: cfg, issuer: issuer, store: store, tenants: tenants, now: time.Now().UTC(), stderr: stderr}
	if o.keys > 0 {
		if s.keys, err = makeKeys(o.keys); err != nil {
			return err
		}
	}
	start := time.Now()
	if err := s.enrollAll(ctx); err != nil {
		return err
	}
	enrollTime := time.Since(start)
	start = time.Now()
	if err := s.revokeAll(ctx); err != nil {
		return err
	}
	revokeTime := time.Since(start)
	fmt.Fprintf(stdout, "seeded %d devices (%d already there) in %s: %.0f/s; revoked %d (%d already) in %s\n",
		s.enrolled.Load(), s.skipped.Load(), enrollTime.Round(time.Second), float64(s.enrolled.Load())/enrollTime.Seconds(),
		s.revokedN.Load(), s.revokeSkipped.Load(), revokeTime.Round(time.Second))
	return nil
}

// ensureTenants returns the tenant ids devices are spread over, creating
// seed-01 .. seed-N (audited) when missing.
func ensureTenants(ctx context.Context, store registry.Store, n int) ([]*registry.Tenant, error) {
	if n == 1 {
		t, err := store.GetTenant(ctx, registry.DefaultTenant)
		if err != nil {
			return nil, fmt.Errorf("read the default tenant: %w", err)
		}
		return []*registry.Tenant{t}, nil
	}
	out := make([]*registry.Tenant, n)
	for i := range out {
		name := fmt.Sprintf("seed-%02d", i+1)
		t, err := store.GetTenant(ctx, name)
		if errors.Is(err, registry.ErrNotFound) {
			t, err = provision.CreateTenant(ctx, store, provision.TenantSpec{Name: name, Who: seedActor})
		}
		if err != nil {
			return nil, fmt.Errorf("tenant %s: %w", name, err)
		}
		out[i] = t
	}
	return out, nil
}

func makeKeys(n int) ([]crypto.PublicKey, error) {
	keys := make([]crypto.PublicKey, n)
	for i := range keys {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		keys[i] = k.Public()
	}
	return keys, nil
}

type seeder struct {
	o       options
	cfg     *config
	issuer  func(now func() time.Time) (*pki.Issuer, error)
	store   *sqlstore.Store
	tenants []*registry.Tenant
	keys    []crypto.PublicKey
	now     time.Time
	stderr  io.Writer

	enrolled, skipped, revokedN, revokeSkipped atomic.Int64
}

// device is what index i of the fleet is: deterministic, so that a run
// started again finds the same devices.
type device struct {
	tenant *registry.Tenant
	id     string
	serial string
	macs   []string
	issued time.Time // when its certificate was signed
}

// Vendor OUIs the MACs are drawn under (a fleet of a few hardware models).
var ouis = []string{"b827eb", "dca632", "3c71bf", "7cdfa1"}

// deviceNamespace derives device ids (UUIDv5 of tenant/serial).
var deviceNamespace = uuid.MustParse("6f1c0d2e-8a53-4d4b-9a44-0b7d5e0c5e11")

func (s *seeder) device(i int) device {
	t := s.tenants[i%len(s.tenants)]
	model := i % len(ouis)
	// Serials as a factory prints them: model, production week, counter.
	serial := fmt.Sprintf("GW%d-%02d%02d-%07d", model+1, 24+(i/520_000)%3, 1+(i/10_000)%52, i)
	// The NIC part of the MAC is the index (24 bits: 16.7 million devices
	// per OUI), so MACs are unique within the fleet.
	nic := uint32(i) & 0xffffff
	macs := []string{fmt.Sprintf("%s%06x", ouis[model], nic)}
	if i%10 == 0 {
		macs = append(macs, fmt.Sprintf("%s%06x", ouis[(model+1)%len(ouis)], nic^0x800000))
	}
	// Issued at a time spread over the past lifetime (a multiplicative
	// hash of i), so expiry is spread over the coming lifetime.
	life := s.cfg.lifetime()
	frac := float64(bits.RotateLeft32(uint32(i)*2654435761, 7)) / (1 << 32)
	issued := s.now.Add(-time.Duration(frac * float64(life-2*time.Minute)))
	id := uuid.NewSHA1(deviceNamespace, []byte(t.ID+"/"+serial)).String()
	return device{tenant: t, id: id, serial: serial, macs: macs, issued: issued}
}

// enrollAll signs and records every device: signers feed enrollers through
// a bounded channel (memory stays flat whatever -devices is).
func (s *seeder) enrollAll(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	bar := s.bar(s.o.devices, "enrolling")
	next := atomic.Int64{}
	work := make(chan *registry.Enrollment, 4*s.o.inflight)
	var signers sync.WaitGroup
	for range s.o.signers {
		signers.Add(1)
		go func() {
			defer signers.Done()
			var issueAt time.Time
			issuer, err := s.issuer(func() time.Time { return issueAt })
			if err != nil {
				cancel(err)
				return
			}
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= s.o.devices {
					return
				}
				d := s.device(i)
				if s.o.force {
					// Resuming: a device already recorded costs one indexed
					// read, not a signature.
					switch _, err := s.store.GetDeviceBySerial(ctx, d.tenant.ID, d.serial); {
					case err == nil:
						s.skipped.Add(1)
						bar.Add(1)
						continue
					case !errors.Is(err, registry.ErrNotFound):
						cancel(fmt.Errorf("read device %q: %w", d.serial, err))
						return
					}
				}
				issueAt = d.issued
				e, err := s.sign(ctx, issuer, i, d)
				if err != nil {
					cancel(err)
					return
				}
				select {
				case work <- e:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() { signers.Wait(); close(work) }()
	var enrollers sync.WaitGroup
	for range s.o.inflight {
		enrollers.Add(1)
		go func() {
			defer enrollers.Done()
			for e := range work {
				err := s.store.Enroll(ctx, e)
				switch {
				case errors.Is(err, registry.ErrSerialConflict):
					s.skipped.Add(1) // a resumed run: enrolled before
				case err != nil:
					cancel(fmt.Errorf("record device %s (serial %q): %w", e.Device.ID, e.Device.Serial, err))
					continue
				default:
					s.enrolled.Add(1)
				}
				bar.Add(1)
			}
		}()
	}
	enrollers.Wait()
	bar.Finish()
	if err := context.Cause(ctx); err != nil {
		done := s.enrolled.Load() + s.skipped.Load()
		return fmt.Errorf("enrolling stopped after %d of %d devices: %w\nwhat is recorded is consistent (each device with its certificate "+
			"and audit event); run again with the same flags and -force to finish", done, s.o.devices, err)
	}
	return nil
}

// sign issues device d's certificate, with a fresh key unless -keys.
func (s *seeder) sign(ctx context.Context, issuer *pki.Issuer, i int, d device) (*registry.Enrollment, error) {
	var pub crypto.PublicKey
	if len(s.keys) > 0 {
		pub = s.keys[i%len(s.keys)]
	} else {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		pub = k.Public()
	}
	issued, err := issuer.IssueDevice(ctx, &pki.DeviceRequest{
		Identity:  pki.Identity{DeviceID: d.id, Tenant: d.tenant.Name, Serial: d.serial, MACs: d.macs},
		PublicKey: pub, Lifetime: s.cfg.lifetime(), Profile: s.cfg.profile(),
	})
	if err != nil {
		return nil, fmt.Errorf("sign the certificate of %q: %w", d.serial, err)
	}
	rec := provision.CertificateRecord(issued.Certificate, registry.KindDevice, d.tenant.ID, d.id, d.issued)
	return &registry.Enrollment{
		Device: &registry.Device{ID: d.id, TenantID: d.tenant.ID, Serial: d.serial, MACs: d.macs, Status: registry.DeviceActive,
			Method: "token", CreatedAt: d.issued, UpdatedAt: d.issued},
		Certificate: rec,
		Audit: &registry.AuditEvent{TenantID: d.tenant.ID, Actor: seedActor.String(), Action: string(provision.ActionEnroll),
			Target: d.id, Result: registry.ResultOK, Detail: fmt.Sprintf("method=token serial=%s cert=%s seeded", d.serial, rec.Serial)},
	}, nil
}

// Revocation reasons of the seeded revocations, in turn (RFC 5280).
var reasons = []int{registry.ReasonKeyCompromise, registry.ReasonCessationOfOperation, registry.ReasonUnspecified, registry.ReasonSuperseded}

// revokeAll revokes -revoked devices spread evenly over the fleet, each
// through RevokeDevice with its audit event.
func (s *seeder) revokeAll(ctx context.Context) error {
	if s.o.revoked == 0 {
		return nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	bar := s.bar(s.o.revoked, "revoking")
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(s.o.inflight, 256) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				k := int(next.Add(1) - 1)
				if k >= s.o.revoked {
					return
				}
				i := int(int64(k) * int64(s.o.devices) / int64(s.o.revoked))
				d := s.device(i)
				reason := reasons[k%len(reasons)]
				_, err := s.store.RevokeDevice(ctx, d.id, reason, &registry.AuditEvent{TenantID: d.tenant.ID, Actor: seedActor.String(),
					Action: string(provision.ActionDeviceRevoke), Target: d.id, Result: registry.ResultOK,
					Detail: fmt.Sprintf("reason=%d serial=%s seeded", reason, d.serial)})
				switch {
				case errors.Is(err, registry.ErrAlreadyRevoked):
					s.revokeSkipped.Add(1)
				case err != nil:
					cancel(fmt.Errorf("revoke device %s (serial %q): %w", d.id, d.serial, err))
					return
				default:
					s.revokedN.Add(1)
				}
				bar.Add(1)
			}
		}()
	}
	wg.Wait()
	bar.Finish()
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("revoking stopped after %d of %d devices: %w\nrun again with the same flags and -force to finish",
			s.revokedN.Load()+s.revokeSkipped.Load(), s.o.revoked, err)
	}
	return nil
}

func (s *seeder) bar(n int, what string) *progressbar.ProgressBar {
	w := s.stderr
	if s.o.quiet {
		w = io.Discard
	}
	return progressbar.NewOptions64(int64(n),
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("devices"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionThrottle(250*time.Millisecond),
		progressbar.OptionSetWidth(30),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)
}
