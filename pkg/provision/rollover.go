package provision

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/registry"
)

// Rollover actions.
const (
	ActionRolloverPrepare  Action = "ca.rollover.prepare"
	ActionRolloverActivate Action = "ca.rollover.activate"
	ActionRolloverRetire   Action = "ca.rollover.retire"
)

// DefaultRolloverPoll is how often a replica re-reads the issuers: the
// bound on how late it follows another replica's activate or retire.
const DefaultRolloverPoll = 30 * time.Second

// RolloverStore is what Rollover reads and writes. *sqlstore.Store
// implements it.
type RolloverStore interface {
	ListIssuers(ctx context.Context) ([]*registry.CAIssuer, error)
	RegisterInitialIssuer(ctx context.Context, iss *registry.CAIssuer) (bool, error)
	PrepareIssuer(ctx context.Context, iss *registry.CAIssuer, audit *registry.AuditEvent) error
	ActivateIssuer(ctx context.Context, keyID string, at time.Time, audit *registry.AuditEvent) error
	RetireIssuer(ctx context.Context, keyID string, at time.Time, audit *registry.AuditEvent) error
	RecordBundleFetch(ctx context.Context, deviceID, issuerKID string, at time.Time) error
	RolloverStatus(ctx context.Context, issuerKID string, now time.Time) ([]registry.RolloverTenant, error)
	auditAppender
}

// RolloverConfig configures NewRollover. Store, Issuers, Initial,
// Password and Dir are required.
type RolloverConfig struct {
	Store   RolloverStore
	Issuers *pki.IssuerSet
	// Initial is the CA from 'ca init' (the config's files); InitialKeyURI
	// and InitialRootKeyURI where its keys are.
	Initial                          *pki.CA
	InitialKeyURI, InitialRootKeyURI string
	// Dir receives the keys and certificates prepare makes; Password
	// encrypts them and decrypts every issuer key (as 'ca init').
	Dir      string
	Password []byte
	// Template is the issuer options of every issuer (trust domain,
	// OCSP URL, backdate); its CRLURL and CAIssuersURL are those of the
	// initial issuer and get "/<key id>" appended for the others.
	Template pki.IssuerOptions
	// Revocation is the initial issuer's; NewRevocation makes another
	// issuer's (a CRL signer and OCSP responder for ca). Both optional.
	Revocation    *Revocation
	NewRevocation func(ctx context.Context, ca *pki.CA, keyID string) (*Revocation, error)
	// Poll is how often Run re-reads the issuers; 0 means
	// DefaultRolloverPoll.
	Poll time.Duration
	Now  func() time.Time
	Log  *slog.Logger
}

// Rollover moves the CA from one issuer to the next: prepare, activate,
// retire, with the issuers' state in the registry so that every replica
// follows (Sync, Run). It is safe for concurrent use.
type Rollover struct {
	cfg RolloverConfig

	mu     sync.Mutex // one Sync at a time
	loaded map[string]*loadedIssuer
}

type loadedIssuer struct {
	issuer *pki.Issuer
	rev    *Revocation
}

// NewRollover checks cfg.
func NewRollover(cfg RolloverConfig) (*Rollover, error) {
	if cfg.Store == nil || cfg.Issuers == nil || cfg.Initial == nil || len(cfg.Password) == 0 || cfg.Dir == "" {
		return nil, errors.New("provision: rollover: Store, Issuers, Initial, Password and Dir are required")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultRolloverPoll
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Rollover{cfg: cfg, loaded: map[string]*loadedIssuer{}}, nil
}

// Start records the initial CA as the active issuer when the registry has
// none yet, then loads the issuers (Sync).
func (r *Rollover) Start(ctx context.Context) error {
	ca := r.cfg.Initial
	_, err := r.cfg.Store.RegisterInitialIssuer(ctx, &registry.CAIssuer{
		KeyID: pki.KeyID(ca.Intermediate), CertPEM: pemString(ca.Intermediate), RootPEM: pemString(ca.Root),
		KeyURI: r.cfg.InitialKeyURI, RootKeyURI: r.cfg.InitialRootKeyURI, NotAfter: ca.Intermediate.NotAfter,
	})
	if err != nil {
		return fmt.Errorf("rollover: %w", err)
	}
	return r.Sync(ctx)
}

// Run re-reads the issuers every Poll until ctx ends.
func (r *Rollover) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := r.Sync(ctx); err != nil && ctx.Err() == nil {
			r.cfg.Log.Error("rollover: reading the CA issuers failed; keeping the current ones", "err", err)
		}
	}
}

// Sync loads the issuers recorded in the registry into the IssuerSet and
// the per-issuer revocation: the active one signs, every other one stays
// trusted and keeps its CRL and OCSP until its certificate expires. An
// issuer whose key cannot be loaded is skipped (logged); the set is left as
// it was when the active one cannot be loaded.
func (r *Rollover) Sync(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	rows, err := r.cfg.Store.ListIssuers(ctx)
	if err != nil {
		return err
	}
	now := r.cfg.Now()
	st := &pki.IssuerSetState{Trusted: map[string]*pki.Issuer{}}
	revs := map[string]*Revocation{}
	seenRoot := map[string]bool{}
	initialKID := pki.KeyID(r.cfg.Initial.Intermediate)
	for _, row := range rows {
		li, err := r.load(ctx, row, initialKID)
		if err != nil {
			r.cfg.Log.Error("rollover: cannot load CA issuer", "issuer", row.KeyID, "state", row.State, "err", err)
			if row.State == registry.IssuerActive {
				return fmt.Errorf("load the active issuer %s: %w", row.KeyID, err)
			}
			continue
		}
		expired := now.After(row.NotAfter)
		if li.rev != nil && !expired {
			revs[row.KeyID] = li.rev
		}
		if expired && row.State != registry.IssuerActive {
			continue
		}
		st.Trusted[row.KeyID] = li.issuer
		root := li.issuer.Root()
		if fp := pki.Fingerprint(root); !seenRoot[fp] {
			seenRoot[fp] = true
			st.Roots = append(st.Roots, root)
		}
		if row.CrossPEM != "" {
			if c, err := parsePEMCert(row.CrossPEM); err == nil {
				st.Cross = append(st.Cross, c)
			}
		}
		switch row.State {
		case registry.IssuerActive:
			st.Active = li.issuer
			if st.BundleKeyID == "" {
				st.BundleKeyID = row.KeyID
			}
		case registry.IssuerPrepared:
			st.BundleKeyID = row.KeyID
		}
	}
	if st.Active == nil {
		return errors.New("rollover: the registry names no active CA issuer")
	}
	if err := r.cfg.Issuers.Set(st); err != nil {
		return err
	}
	if r.cfg.Revocation != nil {
		r.cfg.Revocation.SetIssuers(revs)
	}
	return nil
}

// load returns the issuer of row, loading its key once.
func (r *Rollover) load(ctx context.Context, row *registry.CAIssuer, initialKID string) (*loadedIssuer, error) {
	if li := r.loaded[row.KeyID]; li != nil {
		return li, nil
	}
	opts := r.cfg.Template
	var ca *pki.CA
	if row.KeyID == initialKID {
		ca = r.cfg.Initial
	} else {
		inter, err := parsePEMCert(row.CertPEM)
		if err != nil {
			return nil, err
		}
		root, err := parsePEMCert(row.RootPEM)
		if err != nil {
			return nil, err
		}
		signer, err := pki.LoadSigner(ctx, row.KeyURI, r.cfg.Password)
		if err != nil {
			return nil, err
		}
		if ca, err = pki.NewCAFromParts(ctx, root, inter, signer); err != nil {
			return nil, err
		}
		if opts.CRLURL != "" {
			opts.CRLURL = strings.TrimSuffix(opts.CRLURL, "/") + "/" + row.KeyID
		}
		// Partition CRLs are the initial issuer's; another issuer's
		// certificates name its one CRL.
		opts.CRLPartitions = 0
		if opts.CAIssuersURL != "" {
			opts.CAIssuersURL = strings.TrimSuffix(strings.TrimSuffix(opts.CAIssuersURL, ".crt"), "/") + "/" + row.KeyID + ".crt"
		}
	}
	opts.CA = ca
	iss, err := pki.NewIssuer(opts)
	if err != nil {
		return nil, err
	}
	li := &loadedIssuer{issuer: iss}
	switch {
	case row.KeyID == initialKID:
		li.rev = r.cfg.Revocation
	case r.cfg.NewRevocation != nil:
		if li.rev, err = r.cfg.NewRevocation(ctx, ca, row.KeyID); err != nil {
			return nil, err
		}
	}
	r.loaded[row.KeyID] = li
	return li, nil
}

// RolloverResult is what a rollover step did.
type RolloverResult struct {
	Issuer   *registry.CAIssuer // the issuer the step moved
	Previous *registry.CAIssuer // activate: the issuer it replaced
	Files    []string           // prepare: the files written
}

// findIssuers returns the issuers in each state (the last of each).
func (r *Rollover) findIssuers(ctx context.Context) (map[registry.IssuerState]*registry.CAIssuer, error) {
	rows, err := r.cfg.Store.ListIssuers(ctx)
	if err != nil {
		return nil, err
	}
	out := map[registry.IssuerState]*registry.CAIssuer{}
	for _, row := range rows {
		out[row.State] = row
	}
	return out, nil
}

// Prepare makes the next issuer — an intermediate under the current root,
// or with newRoot a new root cross-signed by the current one and an
// intermediate under it — writes its encrypted key and certificates to
// Dir and records it as prepared. Its root (and cross certificate) join
// the trust bundle at once; it signs nothing until Activate. Refused with
// registry.ErrRolloverOrder while an issuer is prepared or a previous one
// is not retired; only super-admins may roll the CA.
func (r *Rollover) Prepare(ctx context.Context, who Actor, newRoot bool) (*RolloverResult, error) {
	const action = ActionRolloverPrepare
	if err := r.allowed(ctx, who, action); err != nil {
		return nil, err
	}
	by, err := r.findIssuers(ctx)
	if err != nil {
		return nil, fmt.Errorf("rollover prepare: %w", err)
	}
	if err := prepareOrder(by); err != nil {
		r.refuse(ctx, who, action, err)
		return nil, err
	}
	cur := by[registry.IssuerActive]
	if cur == nil {
		return nil, errors.New("rollover prepare: no active issuer recorded: restart 'ca serve'")
	}
	root, err := parsePEMCert(cur.RootPEM)
	if err != nil {
		return nil, fmt.Errorf("rollover prepare: %w", err)
	}
	if cur.RootKeyURI == "" {
		err := errors.New("rollover prepare: the current root's key is not known: set ca.root_key in ca.yaml")
		r.refuse(ctx, who, action, err)
		return nil, err
	}
	rootKey, err := pki.LoadSigner(ctx, cur.RootKeyURI, r.cfg.Password)
	if err != nil {
		return nil, fmt.Errorf("rollover prepare: root key: %w", err)
	}
	ro, err := pki.CreateRollover(ctx, pki.RolloverOptions{
		Dir: r.cfg.Dir, Password: r.cfg.Password, Root: root, RootSigner: rootKey, NewRoot: newRoot, Now: r.cfg.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("rollover prepare: %w", err)
	}
	iss := &registry.CAIssuer{
		KeyID: pki.KeyID(ro.Intermediate), Kind: registry.IssuerKindIntermediate,
		CertPEM: pemString(ro.Intermediate), RootPEM: pemString(ro.Root),
		KeyURI: ro.IntermediateKey, RootKeyURI: cur.RootKeyURI, NotAfter: ro.Intermediate.NotAfter,
	}
	files := []string{ro.IntermediateCert, ro.IntermediateKey}
	detail := "kind=intermediate not_after=" + ro.Intermediate.NotAfter.UTC().Format(time.RFC3339)
	if newRoot {
		iss.Kind, iss.CrossPEM, iss.RootKeyURI = registry.IssuerKindRoot, pemString(ro.Cross), ro.RootKey
		files = append(files, ro.RootCert, ro.RootKey, ro.CrossCert)
		detail = "kind=root root_fingerprint=" + pki.Fingerprint(ro.Root) + " not_after=" + ro.Intermediate.NotAfter.UTC().Format(time.RFC3339)
	}
	if err := r.cfg.Store.PrepareIssuer(ctx, iss, event(who, registry.DefaultTenant, action, iss.KeyID, registry.ResultOK, detail)); err != nil {
		r.refuse(ctx, who, action, err)
		return nil, fmt.Errorf("rollover prepare: %w", err)
	}
	if err := r.Sync(ctx); err != nil {
		r.cfg.Log.Error("rollover: reload after prepare", "err", err)
	}
	iss.State = registry.IssuerPrepared
	if iss.CreatedAt.IsZero() {
		iss.CreatedAt = r.cfg.Now().UTC()
	}
	return &RolloverResult{Issuer: iss, Files: files}, nil
}

func prepareOrder(by map[registry.IssuerState]*registry.CAIssuer) error {
	if p := by[registry.IssuerPrepared]; p != nil {
		return fmt.Errorf("%w: issuer %s is already prepared: activate it ('ca rollover activate') before preparing another", registry.ErrRolloverOrder, p.KeyID)
	}
	if p := by[registry.IssuerPrevious]; p != nil {
		return fmt.Errorf("%w: issuer %s is still in its overlap: retire it ('ca rollover retire') before preparing another", registry.ErrRolloverOrder, p.KeyID)
	}
	return nil
}

// Activate makes the prepared issuer sign every new certificate; the
// active one becomes previous (trusted, its CRL and OCSP served, signing
// no certificate). Refused with registry.ErrRolloverOrder when none is
// prepared.
func (r *Rollover) Activate(ctx context.Context, who Actor) (*RolloverResult, error) {
	const action = ActionRolloverActivate
	if err := r.allowed(ctx, who, action); err != nil {
		return nil, err
	}
	by, err := r.findIssuers(ctx)
	if err != nil {
		return nil, fmt.Errorf("rollover activate: %w", err)
	}
	next := by[registry.IssuerPrepared]
	if next == nil {
		err := fmt.Errorf("%w: no issuer is prepared: run 'ca rollover prepare' first", registry.ErrRolloverOrder)
		r.refuse(ctx, who, action, err)
		return nil, err
	}
	// The new issuer's key must load here before any replica is told to
	// sign with it.
	if _, err := pki.LoadSigner(ctx, next.KeyURI, r.cfg.Password); err != nil {
		err = fmt.Errorf("rollover activate: the prepared issuer's key: %w", err)
		r.refuse(ctx, who, action, err)
		return nil, err
	}
	prev := by[registry.IssuerActive]
	detail := ""
	if prev != nil {
		detail = "previous=" + prev.KeyID
	}
	if err := r.cfg.Store.ActivateIssuer(ctx, next.KeyID, r.cfg.Now(), event(who, registry.DefaultTenant, action, next.KeyID, registry.ResultOK, detail)); err != nil {
		r.refuse(ctx, who, action, err)
		return nil, fmt.Errorf("rollover activate: %w", err)
	}
	if err := r.Sync(ctx); err != nil {
		r.cfg.Log.Error("rollover: reload after activate", "err", err)
	}
	next.State = registry.IssuerActive
	return &RolloverResult{Issuer: next, Previous: prev}, nil
}

// Retire ends the overlap: the previous issuer is retired — it signs no
// certificate; its CRL and OCSP answers go on until its certificate
// expires (which bounds every certificate it signed). Refused with
// registry.ErrRolloverOrder when no issuer is previous.
func (r *Rollover) Retire(ctx context.Context, who Actor) (*RolloverResult, error) {
	const action = ActionRolloverRetire
	if err := r.allowed(ctx, who, action); err != nil {
		return nil, err
	}
	by, err := r.findIssuers(ctx)
	if err != nil {
		return nil, fmt.Errorf("rollover retire: %w", err)
	}
	old := by[registry.IssuerPrevious]
	if old == nil {
		err := fmt.Errorf("%w: no issuer is in its overlap: retire follows 'ca rollover activate'", registry.ErrRolloverOrder)
		r.refuse(ctx, who, action, err)
		return nil, err
	}
	if err := r.cfg.Store.RetireIssuer(ctx, old.KeyID, r.cfg.Now(), event(who, registry.DefaultTenant, action, old.KeyID, registry.ResultOK,
		"crl_until="+old.NotAfter.UTC().Format(time.RFC3339))); err != nil {
		r.refuse(ctx, who, action, err)
		return nil, fmt.Errorf("rollover retire: %w", err)
	}
	if err := r.Sync(ctx); err != nil {
		r.cfg.Log.Error("rollover: reload after retire", "err", err)
	}
	old.State = registry.IssuerRetired
	return &RolloverResult{Issuer: old}, nil
}

// RolloverStatus is where a rollover stands.
type RolloverStatus struct {
	Issuers []*registry.CAIssuer
	// Target is the issuer adoption is counted for: the prepared one, else
	// the active one; nil with no issuer recorded.
	Target  *registry.CAIssuer
	Tenants []registry.RolloverTenant // in who's scope
}

// Status counts, per tenant in who's scope, the devices holding a
// certificate of the target issuer and those that fetched its trust
// bundle.
func (r *Rollover) Status(ctx context.Context, who Actor) (*RolloverStatus, error) {
	rows, err := r.cfg.Store.ListIssuers(ctx)
	if err != nil {
		return nil, fmt.Errorf("rollover status: %w", err)
	}
	out := &RolloverStatus{Issuers: rows}
	for _, row := range rows {
		switch row.State {
		case registry.IssuerPrepared:
			out.Target = row
		case registry.IssuerActive:
			if out.Target == nil || out.Target.State != registry.IssuerPrepared {
				out.Target = row
			}
		}
	}
	if out.Target == nil {
		return out, nil
	}
	all, err := r.cfg.Store.RolloverStatus(ctx, out.Target.KeyID, r.cfg.Now())
	if err != nil {
		return nil, fmt.Errorf("rollover status: %w", err)
	}
	for _, t := range all {
		if InScope(who, t.TenantID) {
			out.Tenants = append(out.Tenants, t)
		}
	}
	return out, nil
}

// RecordBundleFetch records that the device of leaf — a certificate this
// CA issued, verified by the caller — fetched the current trust bundle. A
// certificate that names no device records nothing.
func (r *Rollover) RecordBundleFetch(ctx context.Context, leaf *x509.Certificate) error {
	st := r.cfg.Issuers.State()
	if leaf == nil || leaf.Subject.CommonName == "" || st == nil || st.BundleKeyID == "" {
		return nil
	}
	return r.cfg.Store.RecordBundleFetch(ctx, leaf.Subject.CommonName, st.BundleKeyID, r.cfg.Now())
}

// allowed refuses (audited) an actor that is not a super-admin: a rollover
// changes the CA of every tenant.
func (r *Rollover) allowed(ctx context.Context, who Actor, action Action) error {
	if who.Super || who.Kind == ActorLocal || who.Kind == ActorSystem {
		return nil
	}
	err := fmt.Errorf("%w: a CA rollover changes every tenant's CA: only a super-admin may run it", ErrForbidden)
	r.refuse(ctx, who, action, err)
	return err
}

func (r *Rollover) refuse(ctx context.Context, who Actor, action Action, cause error) {
	if err := appendRefusal(ctx, r.cfg.Store, who, "", action, "ca", cause); err != nil {
		r.cfg.Log.Error("audit append failed", "action", action, "err", err)
	}
}

func pemString(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

func parsePEMCert(s string) (*x509.Certificate, error) {
	b, _ := pem.Decode([]byte(s))
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}
