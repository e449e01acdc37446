package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestLockoutEndToEnd: over real HTTPS against the real CA with its default
// limits (10 failed authentications a minute per source and door), ten bad
// tokens get 401, then the source is locked out of the enrollment door: 429
// rate-limited with Retry-After, even with a good token, which stays
// unspent; the EST door is counted on its own, and nothing but the access
// log records the 429s.
func TestLockoutEndToEnd(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := ca.serve(t)
	root := readCert(t, filepath.Join(ca.Dir, "root.crt"))
	pool := x509.NewCertPool()
	pool.AddCert(root)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	enroll := func(token string) (int, http.Header, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/enroll", strings.NewReader(`{"csr":""}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	good := ca.mintToken(t, srv)
	for i := range 10 {
		if code, _, body := enroll("dpk_not-a-token-" + strconv.Itoa(i)); code != http.StatusUnauthorized {
			t.Fatalf("bad token %d: %d %s", i+1, code, body)
		}
	}
	db := ca.openSQL(t)
	var auditBefore int
	if err := db.QueryRow("SELECT COUNT(*) FROM audit_events").Scan(&auditBefore); err != nil {
		t.Fatal(err)
	}
	code, h, body := enroll(good.Token)
	if code != http.StatusTooManyRequests || !strings.Contains(body, "rate-limited") {
		t.Fatalf("after ten failures: %d %s, want 429 rate-limited", code, body)
	}
	if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
		t.Errorf("Retry-After %q, want 1..60 seconds", h.Get("Retry-After"))
	}
	if n := usesLeft(t, db, good.ID); n != 1 {
		t.Errorf("the locked-out request spent the token: %d uses left", n)
	}
	var auditAfter int
	if err := db.QueryRow("SELECT COUNT(*) FROM audit_events").Scan(&auditAfter); err != nil {
		t.Fatal(err)
	}
	if auditAfter != auditBefore {
		t.Errorf("a 429 wrote %d audit rows", auditAfter-auditBefore)
	}
	// The EST door has its own count: a bad Basic password there is a 401.
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/.well-known/est/simpleenroll", bytes.NewReader([]byte("MAA=")))
	req.Header.Set("Content-Type", "application/pkcs10")
	req.SetBasicAuth("x", "dpk_not-a-token")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("EST door after the enrollment door locked: %d, want 401", resp.StatusCode)
	}
	if !strings.Contains(srv.stderr.String(), "status=429") {
		t.Error("the access log has no 429 line")
	}
	ca.auditVerify(t)
}
