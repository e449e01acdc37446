package provision

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/registry"
)

// TokenPrefix starts every bootstrap token, so a leaked one is easy to spot.
const TokenPrefix = "dpk_"

// HashToken is how a bootstrap token is stored and looked up.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// TokenAttestor admits requests that carry a live bootstrap token
// (Request.Credential). It only reads: the token is spent in the
// enrollment's commit.
type TokenAttestor struct {
	Store TokenStore
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Admit checks that the token exists, is unexpired and has uses left
// (registry.Token.Spendable); a spent one admits only the replay of its own
// enrollment (Admission.Replay).
func (a TokenAttestor) Admit(ctx context.Context, req *Request) (*Admission, error) {
	return admitToken(ctx, a.Store, a.Now, req.Credential, req.SourceAddr)
}

// TokenSpec describes a bootstrap token to mint.
type TokenSpec struct {
	Tenant string // tenant name; empty means registry.DefaultTenant
	Serial string // optional serial binding
	// Reinstate, only together with Serial, lets the token re-enroll the
	// device with that serial after an admin revoked it (audited as a
	// reinstatement). Without it a revoked device is refused.
	Reinstate bool
	TTL       time.Duration // zero means 24h
	Uses      int           // zero means 1
	// Who mints it: recorded as the token's creator and audited. The zero
	// value means the CA itself (SystemActor).
	Who Actor
}

// TokenMinter is what MintToken reads and writes. *sqlstore.Store
// implements it.
type TokenMinter interface {
	GetTenant(ctx context.Context, name string) (*registry.Tenant, error)
	CreateToken(ctx context.Context, t *registry.Token, audit *registry.AuditEvent) error
}

// MintToken creates a bootstrap token and returns its secret, which is shown
// once and never stored.
func MintToken(ctx context.Context, store TokenMinter, now time.Time, spec TokenSpec) (string, *registry.Token, error) {
	if spec.Tenant == "" {
		spec.Tenant = registry.DefaultTenant
	}
	if spec.TTL == 0 {
		spec.TTL = 24 * time.Hour
	}
	if spec.Uses == 0 {
		spec.Uses = 1
	}
	if spec.Who.Kind == "" {
		spec.Who = SystemActor("", "")
	}
	var errs []error
	if spec.TTL < 0 || spec.TTL > 365*24*time.Hour {
		errs = append(errs, fmt.Errorf("ttl %s out of range (0, 8760h]", spec.TTL))
	}
	if spec.Uses < 0 || spec.Uses > 1_000_000 {
		errs = append(errs, fmt.Errorf("uses %d out of range [1, 1000000]", spec.Uses))
	}
	if spec.Serial != "" {
		if err := pki.ValidateSerial(spec.Serial); err != nil {
			errs = append(errs, fmt.Errorf("serial: %w", err))
		}
	} else if spec.Reinstate {
		errs = append(errs, errors.New("reinstate needs a serial: a reinstate token names the revoked device it brings back"))
	}
	if err := errors.Join(errs...); err != nil {
		return "", nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	tenant, err := store.GetTenant(ctx, spec.Tenant)
	if err != nil {
		return "", nil, fmt.Errorf("tenant %q: %w", spec.Tenant, err)
	}
	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return "", nil, err
	}
	token := TokenPrefix + base64.RawURLEncoding.EncodeToString(secret[:])
	t := &registry.Token{
		ID:        NewUUID(),
		Hash:      HashToken(token),
		TenantID:  tenant.ID,
		Serial:    spec.Serial,
		ExpiresAt: now.Add(spec.TTL).UTC(),
		UsesLeft:  spec.Uses,
		Reinstate: spec.Reinstate,
		CreatedBy: spec.Who.String(),
		CreatedAt: now.UTC(),
	}
	detail := fmt.Sprintf("uses=%d expires=%s", t.UsesLeft, t.ExpiresAt.Format(time.RFC3339))
	if t.Serial != "" {
		detail += " serial=" + t.Serial
	}
	if t.Reinstate {
		detail += " reinstate=true"
	}
	err = store.CreateToken(ctx, t, event(spec.Who, tenant.ID, ActionTokenCreate, t.ID, registry.ResultOK, detail))
	if err != nil {
		return "", nil, fmt.Errorf("store token: %w", err)
	}
	return token, t, nil
}

// ErrInvalidArgument marks a request whose parameters are out of range.
var ErrInvalidArgument = errors.New("invalid argument")
