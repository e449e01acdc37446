package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRevokeUsage: the revoke commands need exactly one target, before or
// after the flags, and the admin flags; mistakes are usage errors (exit 2).
func TestRevokeUsage(t *testing.T) {
	for _, args := range [][]string{
		{"certs"},
		{"certs", "list-everything"},
		{"certs", "revoke"},
		{"certs", "revoke", "--reason", "keyCompromise"},
		{"certs", "revoke", "ab12", "cd34"},
		{"certs", "revoke", "ab12", "--reason", "keyCompromise", "extra"},
		{"devices", "revoke", "--bogus", "x"},
		{"devices", "revoke", "dev-1"}, // no --config
		{"devices", "revoke", "dev-1", "--config", "x.yaml", "--output", "yaml"},
	} {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), args, &out, &errOut); !errors.Is(err, errUsage) {
			t.Errorf("ca %s: err = %v, want a usage error", strings.Join(args, " "), err)
		}
	}
	// The target before or after the flags reaches the config step.
	missing := filepath.Join(t.TempDir(), "none.yaml")
	for _, args := range [][]string{
		{"certs", "revoke", "ab12", "--config", missing},
		{"certs", "revoke", "--config", missing, "ab12"},
	} {
		err := run(context.Background(), args, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || errors.Is(err, errUsage) || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("ca %s: err = %v, want the missing config", strings.Join(args, " "), err)
		}
	}
}

// TestRevocationConfig: crl.* and ocsp.* defaults, external_url falling
// back to url, and their validation.
func TestRevocationConfig(t *testing.T) {
	base, err := os.ReadFile(filepath.Join("..", "..", "configs", "ca.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	load := func(t *testing.T, s string) (*Config, error) {
		t.Helper()
		p := filepath.Join(t.TempDir(), "ca.yaml")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return LoadConfig(p)
	}
	c, err := load(t, string(base))
	if err != nil {
		t.Fatal(err)
	}
	if c.ExternalURL != c.URL || c.CRL.Validity != Duration(24*time.Hour) || c.CRL.Refresh != Duration(time.Minute) ||
		c.OCSP.Validity != Duration(time.Hour) || c.OCSP.ResponderLifetime != Duration(168*time.Hour) {
		t.Errorf("defaults: external_url %q, crl %+v, ocsp %+v", c.ExternalURL, c.CRL, c.OCSP)
	}
	c, err = load(t, strings.Replace(string(base), "# external_url: https://ca.example.net", "external_url: http://pki.example.net/devpki/", 1))
	if err != nil || c.ExternalURL != "http://pki.example.net/devpki" {
		t.Errorf("external_url: %+v, %v", c, err)
	}
	if crl, ocsp, issuers := c.PublicationURLs(); crl != c.ExternalURL+"/crl" || ocsp != c.ExternalURL+"/ocsp" || issuers != "" {
		t.Errorf("without http_url: %s %s %q", crl, ocsp, issuers)
	}
	c, err = load(t, strings.NewReplacer("# http_listen: 0.0.0.0:80", "http_listen: 0.0.0.0:80",
		"# http_url: http://pki.example.net", "http_url: http://pki.example.net/").Replace(string(base)))
	if err != nil || c.HTTPListen != "0.0.0.0:80" || c.HTTPURL != "http://pki.example.net" {
		t.Fatalf("http_listen, http_url: %+v, %v", c, err)
	}
	if crl, ocsp, issuers := c.PublicationURLs(); crl != "http://pki.example.net/crl" || ocsp != "http://pki.example.net/ocsp" ||
		issuers != "http://pki.example.net/ca.crt" {
		t.Errorf("with http_url: %s %s %s", crl, ocsp, issuers)
	}
	for _, tc := range []struct{ from, to, want string }{
		{"# external_url: https://ca.example.net", "external_url: ftp://x", "external_url"},
		{"# http_listen: 0.0.0.0:80", "http_listen: 0.0.0.0:80", "http_url"}, // all interfaces and no http_url
		{"# http_listen: 0.0.0.0:80", "http_listen: localhost", "http_listen"},
		{"# http_url: http://pki.example.net", "http_url: ldap://pki.example.net", "http_url"},
		{"# http_url: http://pki.example.net", "http_url: http://pki.example.net/?x=1", "http_url"},
		{"refresh: 1m", "refresh: 13h", "crl.refresh"},
		{"validity: 24h", "validity: 10m", "crl.validity"},
		{"responder_lifetime: 168h", "responder_lifetime: 1h", "ocsp.responder_lifetime"},
	} {
		s := strings.Replace(string(base), tc.from, tc.to, 1)
		if s == string(base) {
			t.Fatalf("%q not in the example", tc.from)
		}
		if _, err := load(t, s); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one naming %s", tc.to, err, tc.want)
		}
	}
}
