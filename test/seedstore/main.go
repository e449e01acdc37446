// Command seedstore fills a CA's registry with N enrolled devices through
// the store (sqlstore.Enroll: device, certificate, token spend and chained
// audit event per enrollment, group-committed), each with a real, unique
// ECDSA P-256 certificate of a device's size, so that measurements on the
// registry (backup, restore) see realistic rows. The certificates are signed
// by a throwaway key: they are ballast, not identities.
//
//	go run ./test/seedstore --config DIR/ca.yaml -n 100000
//
// Run it on a CA that is not serving (it opens the registry for writing).
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gopkg.in/yaml.v3"

	"devpki/pkg/registry"
	"devpki/pkg/registry/sqlstore"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "seedstore:", err)
		os.Exit(1)
	}
}

func run() error {
	config := flag.String("config", "", "ca.yaml of the CA whose registry to fill (SQLite or PostgreSQL)")
	n := flag.Int("n", 100000, "devices to enroll")
	workers := flag.Int("c", 64, "concurrent enrollments (the store groups them into transactions)")
	prefix := flag.String("prefix", "SEED", "serial prefix")
	flag.Parse()
	if *config == "" || *n <= 0 || *workers <= 0 {
		return errors.New("--config, a positive -n and -c are required")
	}
	b, err := os.ReadFile(*config)
	if err != nil {
		return err
	}
	var cfg struct {
		DB struct{ Driver, DSN string } `yaml:"db"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		return err
	}
	dsn := cfg.DB.DSN
	if cfg.DB.Driver != sqlstore.DriverPostgres && !filepath.IsAbs(dsn) {
		dsn = filepath.Join(filepath.Dir(*config), dsn)
	}
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, sqlstore.Options{Driver: cfg.DB.Driver, DSN: dsn})
	if err != nil {
		return err
	}
	defer st.Close()

	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	devKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caCert := &x509.Certificate{Subject: pkix.Name{CommonName: "seedstore ballast issuer"}, SerialNumber: big.NewInt(1)}
	spki, _ := x509.MarshalPKIXPublicKey(&devKey.PublicKey)
	keySum := sha256.Sum256(spki)

	tokSum := sha256.Sum256(fmt.Appendf(nil, "seedstore-%d", time.Now().UnixNano()))
	tok := &registry.Token{ID: fmt.Sprintf("seed-%x", tokSum[:8]), Hash: tokSum[:], TenantID: registry.DefaultTenant,
		UsesLeft: *n, ExpiresAt: time.Now().Add(24 * time.Hour)}
	if err := st.CreateToken(ctx, tok, nil); err != nil {
		return err
	}

	start := time.Now()
	var next, done atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, *workers)
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(*n) {
					return
				}
				e, err := enrollment(i, *prefix, tokSum[:], caCert, caKey, devKey, keySum[:])
				if err == nil {
					err = st.Enroll(ctx, e)
				}
				if err != nil {
					errc <- fmt.Errorf("device %d: %w", i, err)
					return
				}
				if d := done.Add(1); d%10000 == 0 {
					fmt.Fprintf(os.Stderr, "%d/%d devices (%.0f/s)\n", d, *n, float64(d)/time.Since(start).Seconds())
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	fmt.Printf("seeded %d devices in %s\n", *n, time.Since(start).Round(time.Millisecond))
	return nil
}

func enrollment(i int64, prefix string, tokenHash []byte, caCert *x509.Certificate, caKey, devKey *ecdsa.PrivateKey, keySum []byte) (*registry.Enrollment, error) {
	serial := fmt.Sprintf("%s-%09d", prefix, i)
	h := sha256.Sum256([]byte(serial))
	id := fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
	mac := fmt.Sprintf("%012x", h[16:22])
	sn := make([]byte, 20)
	rand.Read(sn)
	sn[0] &= 0x7f
	now := time.Now()
	u, _ := url.Parse("spiffe://devpki.local/default/device/" + serial)
	macURI, _ := url.Parse("urn:dev:mac:" + mac)
	tmpl := &x509.Certificate{
		SerialNumber: new(big.Int).SetBytes(sn),
		Subject:      pkix.Name{CommonName: id, SerialNumber: serial, Organization: []string{registry.DefaultTenant}},
		NotBefore:    now.Add(-time.Minute), NotAfter: now.Add(720 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:                  []*url.URL{u, macURI},
		CRLDistributionPoints: []string{"http://127.0.0.1:8080/crl"}, OCSPServer: []string{"http://127.0.0.1:8080/ocsp"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &devKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	return &registry.Enrollment{
		TokenHash: tokenHash,
		Device:    &registry.Device{ID: id, TenantID: registry.DefaultTenant, Serial: serial, MACs: []string{mac}, Status: registry.DeviceActive, Method: "token"},
		Certificate: &registry.Certificate{
			Serial: tmpl.SerialNumber.Text(16), Kind: registry.KindDevice, DeviceID: id, TenantID: registry.DefaultTenant,
			Subject: "CN=" + id + ",SERIALNUMBER=" + serial + ",O=default", SANs: []string{u.String(), macURI.String()},
			NotBefore: tmpl.NotBefore, NotAfter: tmpl.NotAfter, DER: der, Status: registry.CertActive, KeySHA256: keySum,
		},
		Audit: &registry.AuditEvent{TenantID: registry.DefaultTenant, Actor: "device:" + id, Action: "device.enroll", Target: id,
			Result: registry.ResultOK, Detail: strings.Join([]string{"method=token", "serial=" + serial}, " ")},
	}, nil
}
