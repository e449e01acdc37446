package api_test

import (
	"bytes"
	"net/http"
	"testing"

	"devpki/pkg/provision"
)

func TestCABundles(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, tt := range []struct {
		path string
		want [][]byte // DER, in order
	}{
		{"/v1/ca/roots", [][]byte{f.ca.CA.Root.Raw}},
		{"/v1/ca/chain", [][]byte{f.ca.CA.Intermediate.Raw}},
	} {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			resp, b, err := f.do(f.client, http.MethodGet, tt.path, "", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/x-pem-file" {
				t.Errorf("Content-Type %q", ct)
			}
			certs := parsePEMCerts(t, b)
			if len(certs) != len(tt.want) {
				t.Fatalf("%d certificates, want %d", len(certs), len(tt.want))
			}
			for i, c := range certs {
				if !bytes.Equal(c.Raw, tt.want[i]) {
					t.Errorf("certificate %d is %s, not the expected one", i, c.Subject)
				}
			}
		})
	}
}

func TestHealthz(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	resp, b, err := f.do(f.client, http.MethodGet, "/healthz", "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(`"ok"`)) {
		t.Fatalf("healthz: %d %s", resp.StatusCode, b)
	}

	if err := f.store.VerifyAudit(t.Context()); err != nil {
		t.Fatal(err)
	}
	tok := f.mint(provision.TokenSpec{})
	before := f.counts()
	f.storeClosed.Store(true)
	if err := f.store.Close(); err != nil {
		t.Fatal(err)
	}
	resp, b, err = f.do(f.client, http.MethodGet, "/healthz", "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if p := problemOf(t, resp, b, http.StatusServiceUnavailable); p.Slug() != "unavailable" {
		t.Errorf("slug %q, want unavailable", p.Slug())
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}

	// With the registry gone, enrollment fails as a 5xx problem and no
	// certificate is handed out (DESIGN invariant 1). f.db is a separate
	// read-only handle on the same file, so the rows can still be counted.
	resp, b, err = f.do(f.client, http.MethodPost, "/v1/enroll", tok, "application/json", bytes.NewReader(enrollBody(t, f.csr("SN-DOWN"))))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("enroll with the store closed: %d %s", resp.StatusCode, b)
	if resp.StatusCode < 500 {
		t.Fatalf("enroll with the store closed: %d %s", resp.StatusCode, b)
	}
	if p := problemOf(t, resp, b, resp.StatusCode); bytes.Contains(b, []byte("BEGIN CERTIFICATE")) || p.Detail != "" {
		t.Errorf("5xx problem leaks details or a certificate: %s", b)
	}
	if after := f.counts(); after != before {
		t.Errorf("rows changed: %+v -> %+v", before, after)
	}
}
