package main

import "testing"

func TestRedactDSN(t *testing.T) {
	for in, want := range map[string]string{
		"host=db user=ca password=s3cret dbname=devpki":       "host=db user=ca password=xxxxx dbname=devpki",
		"host=db password='a b\\' c' dbname=devpki":           "host=db password=xxxxx dbname=devpki",
		"postgres://ca:s3cret@db:5432/devpki?sslmode=require": "postgres://ca:xxxxx@db:5432/devpki?sslmode=require",
		"postgres://ca@db/devpki?password=s3cret":             "postgres://ca@db/devpki?password=xxxxx",
		"host=db user=ca dbname=devpki":                       "host=db user=ca dbname=devpki",
	} {
		if got := redactDSN(in); got != want {
			t.Errorf("redactDSN(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIsPostgresDSN(t *testing.T) {
	for in, want := range map[string]bool{
		"postgres://ca@db/devpki":     true,
		"postgresql://ca@db/devpki":   true,
		"host=db dbname=devpki":       true,
		"dbname=devpki":               true,
		"registry.db":                 false,
		"/var/lib/devpki/registry.db": false,
		"mysql://ca@db/devpki":        false,
		"=x":                          false,
		"":                            false,
		"file:registry.db?mode=rwc":   false,
	} {
		if got := isPostgresDSN(in); got != want {
			t.Errorf("isPostgresDSN(%q) = %v, want %v", in, got, want)
		}
	}
}
