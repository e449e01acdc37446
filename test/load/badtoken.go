package main

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "github.com/mattn/go-sqlite3" // driver "sqlite3": the registry's audit tables, read beside the server
)

// -target badtoken is an abuse run: every request is POST /v1/enroll with a
// well-formed bootstrap token nobody minted (a new one each time, as a
// guessing attacker sends), over keep-alive connections, answered 401. It
// reports what the abuse left in the registry: chained audit rows, refusal
// aggregates (rows and the refusals they count) and the database size, before
// and after.

// abuseFigures is the registry before and after a badtoken run.
type abuseFigures struct {
	AuditRowsBefore   int64 `json:"audit_rows_before"`
	AuditRowsAfter    int64 `json:"audit_rows_after"`
	RefusalRowsBefore int64 `json:"refusal_rows_before"`
	RefusalRowsAfter  int64 `json:"refusal_rows_after"`
	RefusalsCounted   int64 `json:"refusals_counted"`
	DBBytesBefore     int64 `json:"db_bytes_before"`
	DBBytesAfter      int64 `json:"db_bytes_after"`
	WALBytesBefore    int64 `json:"wal_bytes_before"`
	WALBytesAfter     int64 `json:"wal_bytes_after"`
}

type registrySnapshot struct {
	auditRows, refusalRows, refusalHits, dbBytes, walBytes int64
}

// snapshotRegistry counts the audit tables of the registry in dir and sizes
// its files (database and WAL). A registry from before the refusal log has
// no audit_refusals table: zero.
func snapshotRegistry(dir string) (registrySnapshot, error) {
	var s registrySnapshot
	path := filepath.Join(dir, "registry.db")
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro&_busy_timeout=10000")
	if err != nil {
		return s, err
	}
	defer db.Close()
	if err := db.QueryRow("SELECT COUNT(*) FROM audit_events").Scan(&s.auditRows); err != nil {
		return s, fmt.Errorf("count audit rows: %w", err)
	}
	if err := db.QueryRow("SELECT COUNT(*), COALESCE(SUM(hits), 0) FROM audit_refusals").Scan(&s.refusalRows, &s.refusalHits); err != nil &&
		!strings.Contains(err.Error(), "no such table") {
		return s, fmt.Errorf("count refusal rows: %w", err)
	}
	if fi, err := os.Stat(path); err == nil {
		s.dbBytes = fi.Size()
	}
	// The WAL holds recent commits until a checkpoint copies them into
	// the database; SQLite reuses it from the start after each checkpoint
	// (every 1,000 pages by default), so it stays about 4 MB.
	if fi, err := os.Stat(path + "-wal"); err == nil {
		s.walBytes = fi.Size()
	}
	return s, nil
}

// prepareBadToken returns what sends bad-token request i.
func prepareBadToken(o options, base string, pool *x509.CertPool) func(int) error {
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: o.c,
	}}
	body := []byte(`{"csr":"-----BEGIN CERTIFICATE REQUEST-----\nMA==\n-----END CERTIFICATE REQUEST-----\n"}`)
	return func(int) error {
		var b [32]byte
		rand.Read(b[:])
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/enroll", strings.NewReader(string(body)))
		req.Header.Set("Authorization", "Bearer dpk_"+base64.RawURLEncoding.EncodeToString(b[:]))
		req.Header.Set("Content-Type", "application/json")
		return send(hc, req, http.StatusUnauthorized, nil)
	}
}

func printAbuse(a *abuseFigures) {
	fmt.Printf("audit rows:        %d -> %d (+%d chained)\n", a.AuditRowsBefore, a.AuditRowsAfter, a.AuditRowsAfter-a.AuditRowsBefore)
	fmt.Printf("refusal rows:      %d -> %d (counting %d refusals)\n", a.RefusalRowsBefore, a.RefusalRowsAfter, a.RefusalsCounted)
	fmt.Printf("database file:     %.2f MB -> %.2f MB (WAL %.2f MB -> %.2f MB)\n", float64(a.DBBytesBefore)/1e6,
		float64(a.DBBytesAfter)/1e6, float64(a.WALBytesBefore)/1e6, float64(a.WALBytesAfter)/1e6)
}
