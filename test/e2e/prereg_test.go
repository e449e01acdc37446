package e2e

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"devpki/pkg/tpm/verify"
)

// TestPreregisterBulkCSV: 'ca devices preregister --csv' registers the good
// rows, reports every bad one with its line, and exits non-zero; a single
// pre-registration by flags works too.
func TestPreregisterBulkCSV(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := ca.serve(t)
	dir := t.TempDir()
	var hashes []string
	writeEK := func(name string) string {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
			t.Fatal(err)
		}
		h, _ := verify.EKHash(&k.PublicKey)
		hashes = append(hashes, h)
		return name
	}
	var csv strings.Builder
	csv.WriteString("serial,macs,ek_pub_file\n")
	for i := 0; i < 3; i++ {
		fmt.Fprintf(&csv, "FAB-%d,02:00:00:00:01:0%d;02:00:00:00:02:0%d,%s\n", i, i, i, writeEK(fmt.Sprintf("ek%d.pem", i)))
	}
	csv.WriteString("bad serial,02:00:00:00:03:00," + writeEK("ek3.pem") + "\n") // line 5
	csv.WriteString("FAB-9,02:00:00:00:04:00,missing.pem\n")                     // line 6
	csv.WriteString("FAB-X,only-two-columns\n")                                  // line 7
	csvPath := filepath.Join(dir, "fleet.csv")
	if err := os.WriteFile(csvPath, []byte(csv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	res := run(t, nil, caBin, "devices", "preregister", "--csv", csvPath, "--config", ca.Config, "--ca", srv.URL)
	if res.code != 1 {
		t.Fatalf("bulk with bad rows: want exit 1, got %s", res)
	}
	for _, want := range []string{"6 rows: 3 pre-registered, 3 failed", "line 5", "line 6", "line 7", "6/6"} {
		if !strings.Contains(res.stdout+res.stderr, want) {
			t.Errorf("bulk output lacks %q:\n%s", want, res)
		}
	}
	st := ca.openStore(t)
	for i, h := range hashes[:3] {
		p, err := st.GetPreregistration(context.Background(), h)
		if err != nil || p.Serial != fmt.Sprintf("FAB-%d", i) || len(p.MACs) != 2 {
			t.Errorf("row %d not registered: %+v, %v", i, p, err)
		}
	}
	one := mustRun(t, nil, caBin, "devices", "preregister", "--serial", "FAB-ONE", "--mac", "02:00:00:00:05:00",
		"--ek-pub", filepath.Join(dir, writeEK("ek-one.pem")), "--config", ca.Config, "--ca", srv.URL)
	if !strings.Contains(one.stdout, "pre-registered FAB-ONE") {
		t.Fatalf("single pre-registration: %s", one)
	}

	// A manufacturer root, added and listed through the CLI.
	rootKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "E2E TPM Maker Root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	rootDER, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &rootKey.PublicKey, rootKey)
	rootFile := filepath.Join(dir, "maker-root.pem")
	if err := os.WriteFile(rootFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, nil, caBin, "tpm", "roots", "add", rootFile, "--config", ca.Config, "--ca", srv.URL)
	if res := run(t, nil, caBin, "tpm", "roots", "add", rootFile, "--config", ca.Config, "--ca", srv.URL); res.code != 1 {
		t.Errorf("adding the same root twice: want exit 1 (409), got %s", res)
	}
	list := mustRun(t, nil, caBin, "tpm", "roots", "list", "--config", ca.Config, "--ca", srv.URL)
	if !strings.Contains(list.stdout, "E2E TPM Maker Root") {
		t.Errorf("tpm roots list:\n%s", list.stdout)
	}
	ca.auditVerify(t)
}
