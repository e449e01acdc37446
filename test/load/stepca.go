package main

// -target steprenew: the same renewal loop as -target renew (each device
// renews once over a NEW mutual-TLS connection), driven against a real
// step-ca (github.com/smallstep/certificates/cmd/step-ca) so the two can be
// compared side by side with one client:
//
//	CGO_ENABLED=0 GOBIN=/tmp/stepca go install github.com/smallstep/certificates/cmd/step-ca@v0.30.2
//	go run ./test/load -target steprenew -stepca-bin /tmp/stepca/step-ca -n 5000 -c 64
//
// step-ca gets what 'step ca init' would give it: a P-256 root and issuing
// intermediate (the intermediate key encrypted, its password in a file), a
// JWK provisioner, its default badger database. Devices get their first
// certificate through POST /1.0/sign with a one-time JWK token (unmeasured),
// then each renews at POST /1.0/renew presenting that certificate and the
// intermediate, as a step client does.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.step.sm/crypto/jose"
	"go.step.sm/crypto/pemutil"
)

// stepCA is a running step-ca and what its clients need.
type stepCA struct {
	cmd  *exec.Cmd
	log  bytes.Buffer
	base string
	pool *x509.CertPool
	root *x509.Certificate
	// inter is the issuing intermediate, sent with each client certificate.
	inter []byte
	jwk   *jose.JSONWebKey
}

func (s *stepCA) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
	}
}

const stepProvisioner = "load"

// runStepRenew is -target steprenew.
func runStepRenew(o options) error {
	if o.stepBin == "" {
		return fmt.Errorf("-target steprenew needs -stepca-bin (CGO_ENABLED=0 go install github.com/smallstep/certificates/cmd/step-ca@v0.30.2)")
	}
	work, err := os.MkdirTemp("", "devpki-load-stepca-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	s, err := startStepCA(o.stepBin, work)
	if s != nil {
		defer s.stop()
	}
	if err != nil {
		return err
	}
	total := o.n + o.warmup
	send, err := s.prepareRenew(o.c, total)
	if err != nil {
		return err
	}
	var next atomic.Int64
	if _, _, err := drive(o.c, o.warmup, &next, time.Minute, send, nil); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	res, err := measure(o, s.cmd.Process.Pid, &next, send)
	if err != nil {
		return err
	}
	if err := report(o, res); err != nil {
		return err
	}
	if res.Failed > 0 {
		return fmt.Errorf("%d requests failed", res.Failed)
	}
	return nil
}

// startStepCA writes a step-ca configuration into dir and starts it.
func startStepCA(bin, dir string) (*stepCA, error) {
	now := time.Now()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	interKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Load Step Root CA"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: 1, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		return nil, err
	}
	root, _ := x509.ParseCertificate(rootDER)
	interTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "Load Step Intermediate CA"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: 0, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	interDER, err := x509.CreateCertificate(rand.Reader, interTmpl, root, interKey.Public(), rootKey)
	if err != nil {
		return nil, err
	}
	password := []byte("load-test-password")
	keyBlock, err := pemutil.Serialize(interKey, pemutil.WithPassword(password))
	if err != nil {
		return nil, err
	}
	// What 'step ca init' makes: an EC P-256 JWK, its kid the thumbprint,
	// the private key encrypted with the password in the provisioner.
	jwk, err := jose.GenerateJWK("EC", "P-256", "ES256", "sig", "", 0)
	if err != nil {
		return nil, err
	}
	if jwk.KeyID, err = jose.Thumbprint(jwk); err != nil {
		return nil, err
	}
	jwe, err := jose.EncryptJWK(jwk, password)
	if err != nil {
		return nil, err
	}
	encKey, err := jwe.CompactSerialize()
	if err != nil {
		return nil, err
	}
	pub := jwk.Public()
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cfg := map[string]any{
		"root":     filepath.Join(dir, "root_ca.crt"),
		"crt":      filepath.Join(dir, "intermediate_ca.crt"),
		"key":      filepath.Join(dir, "intermediate_ca_key"),
		"address":  addr,
		"dnsNames": []string{"127.0.0.1", "localhost"},
		"logger":   map[string]string{"format": "text"},
		"db":       map[string]string{"type": "badgerv2", "dataSource": filepath.Join(dir, "db")},
		"authority": map[string]any{
			"provisioners": []any{map[string]any{
				"type": "JWK", "name": stepProvisioner, "key": &pub, "encryptedKey": encKey,
			}},
		},
		"tls": map[string]any{
			"minVersion": 1.2, "maxVersion": 1.3, "renegotiation": false,
			"cipherSuites": []string{"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"},
		},
	}
	cfgJSON, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"root_ca.crt":         pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}),
		"intermediate_ca.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: interDER}),
		"intermediate_ca_key": pem.EncodeToMemory(keyBlock),
		"password":            password,
		"ca.json":             cfgJSON,
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	s := &stepCA{base: "https://" + addr, pool: x509.NewCertPool(), root: root, inter: interDER, jwk: jwk}
	s.pool.AddCert(root)
	s.cmd = exec.Command(bin, filepath.Join(dir, "ca.json"), "--password-file", filepath.Join(dir, "password"))
	s.cmd.Stdout = &s.log
	s.cmd.Stderr = &s.log
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start step-ca: %w", err)
	}
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.pool}}}
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := hc.Get(s.base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("step-ca did not become healthy within 30s\n%s", s.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ott is a one-time JWK provisioner token for a certificate naming name,
// as 'step ca token' makes it.
func (s *stepCA) ott(name string) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: s.jwk.Key},
		new(jose.SignerOptions).WithType("JWT").WithHeader("kid", s.jwk.KeyID))
	if err != nil {
		return "", err
	}
	jti := make([]byte, 16)
	rand.Read(jti)
	fp := sha256.Sum256(s.root.Raw)
	now := time.Now()
	claims := struct {
		jose.Claims
		SANs []string `json:"sans"`
		SHA  string   `json:"sha"`
	}{
		Claims: jose.Claims{
			Issuer: stepProvisioner, Subject: name, Audience: jose.Audience{s.base + "/1.0/sign"},
			NotBefore: jose.NewNumericDate(now), IssuedAt: jose.NewNumericDate(now),
			Expiry: jose.NewNumericDate(now.Add(5 * time.Minute)), ID: hex.EncodeToString(jti),
		},
		SANs: []string{name},
		SHA:  hex.EncodeToString(fp[:]),
	}
	return jose.Signed(signer).Claims(claims).Serialize()
}

// prepareRenew gives total devices a first certificate (POST /1.0/sign,
// unmeasured) and returns the renewal of device i over a new connection.
func (s *stepCA) prepareRenew(c, total int) (func(int) error, error) {
	fmt.Fprintf(os.Stderr, "step-ca: signing %d device certificates first (not measured) ...\n", total)
	newConnEach := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: s.pool, MinVersion: tls.VersionTLS12}, DisableKeepAlives: true,
	}}
	clients := make([]*http.Client, total)
	var mu sync.Mutex
	var next atomic.Int64
	_, failed, err := drive(c, total, &next, 10*time.Minute, func(i int) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		name := fmt.Sprintf("load-%08d.devices.example", i)
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		}, key)
		if err != nil {
			return err
		}
		tok, err := s.ott(name)
		if err != nil {
			return err
		}
		body, _ := json.Marshal(map[string]string{
			"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})), "ott": tok,
		})
		req, _ := http.NewRequest(http.MethodPost, s.base+"/1.0/sign", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		var sr struct {
			Crt string `json:"crt"`
		}
		if err := send(newConnEach, req, http.StatusCreated, &sr); err != nil {
			return err
		}
		b, _ := pem.Decode([]byte(sr.Crt))
		if b == nil {
			return fmt.Errorf("step-ca /1.0/sign: no certificate in the answer")
		}
		tc := tls.Certificate{Certificate: [][]byte{b.Bytes, s.inter}, PrivateKey: key}
		hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{RootCAs: s.pool, MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{tc}},
		}}
		mu.Lock()
		clients[i] = hc
		mu.Unlock()
		return nil
	}, nil)
	if failed > 0 {
		return nil, fmt.Errorf("step-ca: signing the devices' first certificates: %v\n%s", err, s.log.String())
	}
	return func(i int) error {
		return do(clients[i], http.MethodPost, s.base+"/1.0/renew", "application/json", nil, http.StatusCreated)
	}, nil
}

// runVersus is -target renew-vs-stepca: -rounds rounds, each a devpki
// renewal run (-target renew) then a step-ca one (-target steprenew), every
// run in a fresh process of this tool against a fresh CA, with the same
// client settings; it prints each run and, per round, devpki's throughput
// and CPU efficiency relative to step-ca's (above 1: devpki ahead).
func runVersus(o options) error {
	if o.stepBin == "" {
		return fmt.Errorf("-target renew-vs-stepca needs -stepca-bin (CGO_ENABLED=0 go install github.com/smallstep/certificates/cmd/step-ca@v0.30.2)")
	}
	if o.rounds < 1 || o.rounds > 20 {
		return fmt.Errorf("-rounds must be in [1, 20]")
	}
	caBin := o.caBin
	if caBin == "" {
		dir, err := os.MkdirTemp("", "devpki-load-vs-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if caBin, err = caBinary("", dir); err != nil {
			return err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	one := func(target string) (result, error) {
		args := []string{"-json", "-target", target, "-n", strconv.Itoa(o.n), "-c", strconv.Itoa(o.c),
			"-warmup", strconv.Itoa(o.warmup), "-max-duration", o.maxDuration.String(),
			"-ca-bin", caBin, "-stepca-bin", o.stepBin, "-limits", o.limits}
		if o.classical {
			args = append(args, "-classical")
		}
		cmd := exec.Command(self, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		var res result
		if err != nil {
			return res, fmt.Errorf("%s: %v\n%s", target, err, stderr.String())
		}
		if err := json.Unmarshal(out, &res); err != nil {
			return res, fmt.Errorf("%s: %v", target, err)
		}
		return res, nil
	}
	fmt.Printf("%-6s %-10s %10s %10s %10s %12s\n", "round", "server", "per_s", "p99_ms", "cpu_ms/op", "tool_cpu_ms")
	// rel divides each server's CPU per renewal by the load tool's own in
	// the same run: the tool does the same client work against either, so
	// its CPU per renewal measures how slow the shared host was then.
	var rate, eff, rel []float64
	for r := 1; r <= o.rounds; r++ {
		d, err := one("renew")
		if err != nil {
			return err
		}
		s, err := one("steprenew")
		if err != nil {
			return err
		}
		for _, x := range []struct {
			name string
			res  result
		}{{"devpki", d}, {"step-ca", s}} {
			fmt.Printf("%-6d %-10s %10.0f %10.1f %10.3f %12.3f\n", r, x.name, x.res.PerSecond, x.res.P99ms, x.res.ServerCPUms, x.res.ClientCPUms)
		}
		if d.ServerCPUms > 0 && s.PerSecond > 0 {
			rate = append(rate, d.PerSecond/s.PerSecond)
			eff = append(eff, s.ServerCPUms/d.ServerCPUms)
			line := fmt.Sprintf("       devpki/step-ca: renewals/s %.2fx, CPU efficiency %.2fx", rate[len(rate)-1], eff[len(eff)-1])
			if d.ClientCPUms > 0 && s.ClientCPUms > 0 {
				rel = append(rel, (s.ServerCPUms/s.ClientCPUms)/(d.ServerCPUms/d.ClientCPUms))
				line += fmt.Sprintf(", relative to the tool's CPU %.2fx", rel[len(rel)-1])
			}
			fmt.Println(line)
		}
	}
	slices.Sort(rate)
	slices.Sort(eff)
	fmt.Printf("median over %d rounds: renewals/s %.2fx, CPU efficiency (step-ca CPU per renewal / devpki's) %.2fx\n",
		o.rounds, rate[len(rate)/2], eff[len(eff)/2])
	if len(rel) > 0 {
		slices.Sort(rel)
		fmt.Printf("median CPU efficiency relative to the tool's CPU (step-ca's server/tool ratio over devpki's): %.2fx\n", rel[len(rel)/2])
	}
	return nil
}
