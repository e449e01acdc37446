package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"devpki/pkg/pki"
)

// config is the part of ca.yaml the seeder needs, read as 'ca serve' reads
// it (relative paths from the file's directory, the same defaults). The
// full config type lives in package main of cmd/ca; 'ca serve' validates
// the file, so unknown keys are ignored here.
type config struct {
	Listen       string `yaml:"listen"`
	URL          string `yaml:"url"`
	ExternalURL  string `yaml:"external_url"`
	HTTPURL      string `yaml:"http_url"`
	TrustDomain  string `yaml:"trust_domain"`
	PasswordFile string `yaml:"password_file"`
	CA           struct {
		Root         string `yaml:"root"`
		Intermediate string `yaml:"intermediate"`
		Key          string `yaml:"key"`
	} `yaml:"ca"`
	DB struct {
		Driver string `yaml:"driver"`
		DSN    string `yaml:"dsn"`
	} `yaml:"db"`
	Enrollment struct {
		CertLifetime string `yaml:"cert_lifetime"`
		Profile      string `yaml:"profile"`
	} `yaml:"enrollment"`

	dir  string
	life time.Duration
}

func loadConfig(path string) (*config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w (pass the ca.yaml that 'ca init --dir DIR' wrote)", err)
	}
	var c config
	if err := yaml.NewDecoder(bytes.NewReader(b)).Decode(&c); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	c.dir = filepath.Dir(abs)
	c.life = pki.DefaultLeafLifetime
	if v := c.Enrollment.CertLifetime; v != "" {
		if c.life, err = time.ParseDuration(v); err != nil || c.life < 10*time.Minute {
			return nil, fmt.Errorf("config %s: enrollment.cert_lifetime %q: want a duration of at least 10m such as 720h", path, v)
		}
	}
	if c.TrustDomain == "" {
		c.TrustDomain = "devpki.local"
	}
	if c.URL == "" {
		c.URL = "https://" + c.Listen
	}
	if c.ExternalURL == "" {
		c.ExternalURL = c.URL
	}
	c.ExternalURL = strings.TrimRight(c.ExternalURL, "/")
	c.HTTPURL = strings.TrimRight(c.HTTPURL, "/")
	if c.CA.Root == "" || c.CA.Intermediate == "" || c.CA.Key == "" {
		return nil, fmt.Errorf("config %s: ca.root, ca.intermediate and ca.key are required", path)
	}
	return &c, nil
}

func (c *config) path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

func (c *config) driver() string {
	if c.DB.Driver == "" {
		return "sqlite"
	}
	return c.DB.Driver
}

func (c *config) dsn() string {
	if c.driver() == "sqlite" {
		return c.path(c.DB.DSN)
	}
	return c.DB.DSN
}

func (c *config) lifetime() time.Duration { return c.life }

func (c *config) profile() string {
	if c.Enrollment.Profile == "spiffe" {
		return pki.ProfileSPIFFE
	}
	return pki.ProfileDefault
}

// issuer loads the CA's issuing key once and returns what makes issuers
// over it, each with its own clock (the seeder signs each certificate at
// the time it pretends it was issued).
func (c *config) issuer(ctx context.Context) (func(now func() time.Time) (*pki.Issuer, error), error) {
	var password []byte
	if c.PasswordFile != "" {
		b, err := os.ReadFile(c.path(c.PasswordFile))
		if err != nil {
			return nil, fmt.Errorf("read the key password: %w", err)
		}
		password = bytes.TrimRight(b, "\r\n")
	} else if p := os.Getenv("DEVPKI_PASSWORD"); p != "" {
		password = []byte(p)
	} else {
		return nil, fmt.Errorf("the CA key's password: set password_file in ca.yaml or $DEVPKI_PASSWORD")
	}
	key := c.CA.Key
	const soft = "softkms:path="
	switch {
	case strings.HasPrefix(key, soft):
		key = soft + c.path(strings.TrimPrefix(key, soft))
	case !strings.Contains(key, ":"):
		key = soft + c.path(key)
	}
	ca, err := pki.LoadCA(ctx, pki.LoadOptions{RootCert: c.path(c.CA.Root), IntermediateCert: c.path(c.CA.Intermediate),
		KeyURI: key, Password: password})
	if err != nil {
		return nil, fmt.Errorf("load the CA of %s: %w", filepath.Join(c.dir, "ca.yaml"), err)
	}
	crl, ocsp, issuers := c.ExternalURL+"/crl", c.ExternalURL+"/ocsp", ""
	if c.HTTPURL != "" {
		crl, ocsp, issuers = c.HTTPURL+"/crl", c.HTTPURL+"/ocsp", c.HTTPURL+"/ca.crt"
	}
	return func(now func() time.Time) (*pki.Issuer, error) {
		return pki.NewIssuer(pki.IssuerOptions{CA: ca, TrustDomain: c.TrustDomain, CRLURL: crl, OCSPURL: ocsp, CAIssuersURL: issuers, Now: now})
	}, nil
}
