//go:build tpmsimulator

package provision_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/registry/sqlstore"
	"devpki/pkg/tpm/verify"
	"devpki/pkg/tpm/verify/ektest"
)

// TestTPMChallengeAcrossReplicas: two provision services (two CA replicas),
// each with its own store and Challenger over one registry. A challenge
// issued by A completes on B, and the same answer sent to A afterwards is
// refused as used.
func TestTPMChallengeAcrossReplicas(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "registry.db")
		open := func() registry.Store {
			s, err := sqlstore.Open(context.Background(), sqlstore.Options{DSN: path})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		twoReplicas(t, open(), open(), "00000000000000c1")
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := pgSchemaDSN(t)
		open := func() registry.Store {
			s, err := sqlstore.Open(context.Background(), sqlstore.Options{Driver: sqlstore.DriverPostgres, DSN: dsn})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		twoReplicas(t, open(), open(), "00000000000000c2")
	})
}

func twoReplicas(t *testing.T, regA, regB registry.Store, seed string) {
	ctx := context.Background()
	ca := pkitest.NewCA(t)
	m := ektest.New(t)
	// replica is one CA service on reg: its pipeline and its TPM attestor.
	type replica struct {
		svc *provision.Service
		tpm provision.Attestor
	}
	newReplica := func(reg registry.Store) replica {
		cfg := &provision.TPMConfig{
			EKRoots: m.Roots(), EKIntermediates: m.Intermediates(),
			Challenger: verify.NewChallenger(verify.Config{Store: provision.NewChallengeStore(reg)}),
		}
		svc, err := provision.New(provision.Config{Store: reg, Issuer: ca.Issuer, TrustDomain: "test.devpki", TPM: cfg})
		if err != nil {
			t.Fatal(err)
		}
		return replica{svc: svc, tpm: tpmAttestor(reg, cfg)}
	}
	a, b := newReplica(regA), newReplica(regB)
	d := openSim(t, seed, m)
	defer d.tp.Close()
	const serial, mac = "SN-REPLICA-1", "02:00:00:00:00:11"

	ch, err := a.svc.TPMChallenge(ctx, d.challengeRequest(t, serial, mac))
	if err != nil {
		t.Fatal(err)
	}
	req := d.answer(t, ch, serial, mac)
	res, err := b.svc.Enroll(ctx, b.tpm, req)
	if err != nil {
		t.Fatalf("challenge issued by A, completed on B: %v", err)
	}
	dev, err := regA.GetDevice(ctx, res.DeviceID)
	if err != nil || dev.Serial != serial || dev.EKHash != d.ekHash || dev.Method != provision.MethodTPM {
		t.Fatalf("device seen from A = %+v, %v", dev, err)
	}

	if _, err := a.svc.Enroll(ctx, a.tpm, req); !errors.Is(err, verify.ErrChallengeUsed) {
		t.Fatalf("the same answer on A after B: %v, want ErrChallengeUsed", err)
	}
	if _, err := b.svc.Enroll(ctx, b.tpm, req); !errors.Is(err, verify.ErrChallengeUsed) {
		t.Fatalf("the same answer on B again: %v, want ErrChallengeUsed", err)
	}
	if err := regB.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

// pgSchemaDSN returns a DSN for a fresh schema of the test PostgreSQL
// database (DEVPKI_TEST_POSTGRES_DSN, key=value form), dropped when the
// test ends, or skips.
func pgSchemaDSN(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv("DEVPKI_TEST_POSTGRES_DSN")
	if dsn == "" || strings.Contains(dsn, "://") {
		t.Skip("DEVPKI_TEST_POSTGRES_DSN not set (key=value form)")
	}
	db, err := gorm.Open(postgres.Open(dsn), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	schema := "devpki_prov_" + hex.EncodeToString(b)
	if err := db.Exec("CREATE SCHEMA " + schema).Error; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Exec("DROP SCHEMA " + schema + " CASCADE")
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.Close()
		}
	})
	return dsn + " search_path=" + schema
}
