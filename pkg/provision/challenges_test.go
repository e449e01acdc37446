package provision_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/registry/sqlstore"
	"devpki/pkg/tpm/verify"
)

// TestChallengeStore: the registry-backed verify.Store round-trips a
// pending challenge and answers with verify's sentinels.
func TestChallengeStore(t *testing.T) {
	ctx := context.Background()
	reg, err := sqlstore.Open(ctx, sqlstore.Options{DSN: t.TempDir() + "/r.db"})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	st := provision.NewChallengeStore(reg)
	now := time.Now()
	p := &verify.Pending{
		ID: "ch-1", SecretHash: bytes.Repeat([]byte{1}, 32), Nonce: []byte("nonce"), AKPublic: []byte("ak"),
		EKHash: "ek", Binding: []byte(`{"serial":"SN"}`), Expires: now.Add(time.Minute).Truncate(time.Microsecond),
	}
	if err := st.Put(ctx, p); err != nil {
		t.Fatal(err)
	}
	got, err := st.Consume(ctx, p.ID, now)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != p.ID || !bytes.Equal(got.SecretHash, p.SecretHash) || !bytes.Equal(got.Nonce, p.Nonce) ||
		!bytes.Equal(got.AKPublic, p.AKPublic) || got.EKHash != p.EKHash || !bytes.Equal(got.Binding, p.Binding) ||
		!got.Expires.Equal(p.Expires) {
		t.Errorf("Consume = %+v, want %+v", got, p)
	}
	if _, err := st.Consume(ctx, p.ID, now); !errors.Is(err, verify.ErrChallengeUsed) || !errors.Is(err, registry.ErrChallengeUsed) {
		t.Errorf("second Consume = %v, want ErrChallengeUsed", err)
	}
	if _, err := st.Consume(ctx, "nope", now); !errors.Is(err, verify.ErrChallengeNotFound) {
		t.Errorf("Consume(unknown) = %v, want ErrChallengeNotFound", err)
	}
	late := *p
	late.ID = "ch-2"
	if err := st.Put(ctx, &late); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Consume(ctx, late.ID, late.Expires); !errors.Is(err, verify.ErrChallengeExpired) {
		t.Errorf("Consume(expired) = %v, want ErrChallengeExpired", err)
	}
}
