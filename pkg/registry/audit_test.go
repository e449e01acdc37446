package registry_test

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// TestAuditHashPinned pins AuditHash to the values the hashing produced when
// it lived in sqlstore (audit.go before the move): a change here would make
// every existing registry's chain fail to verify.
func TestAuditHashPinned(t *testing.T) {
	first := &registry.AuditEvent{
		Seq: 42, Time: time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.FixedZone("x", 3600)),
		TenantID: "t-acme", Actor: "admin:alice", Action: "device.revoke", Target: "dev-0001",
		Result: registry.ResultOK, Detail: "reason=1 ünïcode", SourceAddr: "192.0.2.1:443",
		// Not hashed.
		PrevHash: []byte("ignored"), Hash: []byte("ignored"),
	}
	second := &registry.AuditEvent{Seq: 43, Time: time.Date(2026, 3, 14, 15, 0, 0, 0, time.UTC), Actor: "system", Action: "enroll"}

	h1 := registry.AuditHash(make([]byte, sha256.Size), first)
	if got, want := hex.EncodeToString(h1), "0b06a97c7c1184a60c5eb806d6239e11b8a859945e607a1393b79061f4954101"; got != want {
		t.Errorf("AuditHash(first) = %s, want %s", got, want)
	}
	h2 := registry.AuditHash(h1, second)
	if got, want := hex.EncodeToString(h2), "3b259ffef5d482c8dec4f30e53055bb48d44baae7032fc365a35cad918ca2d10"; got != want {
		t.Errorf("AuditHash(second) = %s, want %s", got, want)
	}

	// Every hashed field counts; the length prefixes keep field boundaries.
	moved := *second
	moved.Actor, moved.Action = "systeme", "nroll"
	if hex.EncodeToString(registry.AuditHash(h1, &moved)) == hex.EncodeToString(h2) {
		t.Error("moving a byte from one field to the next left the hash unchanged")
	}
}
