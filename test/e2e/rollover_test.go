package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"devpki/api/wire"
	"devpki/pkg/pki/mtls"
)

// rolloverStatus runs 'ca rollover status --output json'.
func rolloverStatus(t *testing.T, admin []string) wire.RolloverStatusResponse {
	t.Helper()
	out := mustRun(t, nil, caBin, append([]string{"rollover", "status", "--output", "json"}, admin...)...)
	var st wire.RolloverStatusResponse
	if err := json.Unmarshal([]byte(out.stdout), &st); err != nil {
		t.Fatalf("ca rollover status --output json: %v\n%s", err, out)
	}
	return st
}

// wantAdoption checks the default tenant's counts in st.
func wantAdoption(t *testing.T, st wire.RolloverStatusResponse, devices, onNew, fetched int64) {
	t.Helper()
	for _, tn := range st.Tenants {
		if tn.Tenant == "default" {
			if tn.Devices != devices || tn.OnNewIssuer != onNew || tn.FetchedBundle != fetched {
				t.Fatalf("rollover status of tenant default: %+v, want devices %d, on new issuer %d, fetched bundle %d",
					tn, devices, onNew, fetched)
			}
			return
		}
	}
	t.Fatalf("rollover status names no tenant default: %+v", st)
}

// refusedStep runs a rollover step that must be refused as out of order,
// and checks the error tells what to do and that the issuers are unchanged.
func refusedStep(t *testing.T, admin []string, step, hint string) {
	t.Helper()
	before := rolloverStatus(t, admin)
	res := run(t, nil, caBin, append([]string{"rollover", step}, admin...)...)
	if res.code != 1 || !strings.Contains(res.stderr, "rollover-order") || !strings.Contains(res.stderr, hint) {
		t.Fatalf("ca rollover %s out of order: want exit 1, rollover-order and %q, got %s", step, hint, res)
	}
	after := rolloverStatus(t, admin)
	if len(before.Issuers) != len(after.Issuers) || before.Target != after.Target {
		t.Fatalf("a refused %s changed the issuers: %+v -> %+v", step, before.Issuers, after.Issuers)
	}
	for i := range before.Issuers {
		if before.Issuers[i].State != after.Issuers[i].State {
			t.Fatalf("a refused %s changed issuer %s: %s -> %s", step, before.Issuers[i].KeyID, before.Issuers[i].State, after.Issuers[i].State)
		}
	}
}

// issueServerCert gets a loopback server certificate (and chain) from the
// CA's active issuer with 'ca issue', and writes its key.
func issueServerCert(t *testing.T, ca *testCA, srv *server) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	keyFile = filepath.Join(dir, "server.key")
	csrFile := filepath.Join(dir, "server.csr")
	certFile = filepath.Join(dir, "server.crt")
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	os.WriteFile(csrFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}), 0o600)
	mustRun(t, nil, caBin, "issue", "--config", ca.Config, "--ca", srv.URL, "--csr", csrFile,
		"--server", "--ip", "127.0.0.1", "--out", certFile)
	return certFile, keyFile
}

// mtlsPeer is a small fleet component on pkg/pki/mtls: an HTTPS server
// that answers its client's device id, checking revocation against the
// CRL of every CA issuer.
type mtlsPeer struct{ url string }

func startMTLSServer(t *testing.T, root, certFile, keyFile string, crlURLs []string, crlIssuers []*x509.Certificate) *mtlsPeer {
	t.Helper()
	src, err := mtls.New(mtls.Options{
		RootFile: root, CertFile: certFile, KeyFile: keyFile,
		CRLURLs: crlURLs, CRLIssuers: crlIssuers, Intermediates: crlIssuers, TrustDomain: "devpki.local",
	})
	if err != nil {
		t.Fatalf("mtls server: %v", err)
	}
	t.Cleanup(func() { src.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{TLSConfig: src.ServerConfig(), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := src.RequestIdentity(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		io.WriteString(w, id.DeviceID)
	})}
	go hs.ServeTLS(ln, "", "")
	t.Cleanup(func() { hs.Close() })
	return &mtlsPeer{url: "https://" + ln.Addr().String()}
}

// call connects to p with the device identity in dir (its key, certificate,
// chain and trust bundle, as the agent keeps them) and returns what p saw.
func (p *mtlsPeer) call(t *testing.T, dir string) (string, error) {
	t.Helper()
	src, err := mtls.New(mtls.Options{
		RootFile: filepath.Join(dir, "root.crt"), CertFile: filepath.Join(dir, "device.crt"),
		ChainFile: filepath.Join(dir, "chain.pem"), KeyFile: filepath.Join(dir, "device.key"),
		KeyPasswordFile: filepath.Join(dir, "device.key.password"),
	})
	if err != nil {
		return "", err
	}
	defer src.Close()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: src.ClientConfig(), DisableKeepAlives: true}}
	resp, err := hc.Get(p.url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", &httpError{resp.StatusCode, string(b)}
	}
	return string(b), nil
}

// verifyWithBundle verifies the device's certificate with its own files:
// root.crt as the anchors, chain.pem as intermediates.
func verifyWithBundle(t *testing.T, dir string, cert *x509.Certificate) error {
	t.Helper()
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range readCerts(t, filepath.Join(dir, "root.crt")) {
		roots.AddCert(c)
	}
	for _, c := range readCerts(t, filepath.Join(dir, "chain.pem")) {
		inter.AddCert(c)
	}
	_, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err
}

// fetchCRL gets a DER CRL and checks it is signed by issuer.
func fetchIssuerCRL(t *testing.T, u string, issuer *x509.Certificate) *x509.RevocationList {
	t.Helper()
	code, _, body := plainGet(t, u)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d", u, code)
	}
	rl, err := x509.ParseRevocationList(body)
	if err != nil {
		t.Fatalf("%s: %v", u, err)
	}
	if err := rl.CheckSignatureFrom(issuer); err != nil {
		t.Fatalf("%s is not signed by %s: %v", u, issuer.Subject, err)
	}
	return rl
}

func crlLists(rl *x509.RevocationList, sn *big.Int) bool {
	for _, e := range rl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(sn) == 0 {
			return true
		}
	}
	return false
}

// ocspStatus asks the OCSP responder about cert (issued by issuer) and
// checks the answer is signed for that issuer.
func ocspStatus(t *testing.T, u string, cert, issuer *x509.Certificate) int {
	t.Helper()
	req, err := ocsp.CreateRequest(cert, issuer, &ocsp.RequestOptions{Hash: 0})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(u, "application/ocsp-request", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r, err := ocsp.ParseResponseForCert(b, cert, issuer)
	if err != nil {
		t.Fatalf("OCSP answer about %x: %v", cert.SerialNumber, err)
	}
	return r.Status
}

// TestRolloverIntermediateEndToEnd walks an issuing-CA rollover with the
// real binaries: refused steps out of order, prepare, a pkg/pki/mtls
// component accepting old-issuer certificates, activate, renewal onto the
// new issuer (its chain verifies with the device's bundle; old certificates
// still verify), adoption counts, retire, and revocation of certificates
// of both issuers in their own issuer's CRL and OCSP.
func TestRolloverIntermediateEndToEnd(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := startServer(t, "--config", ca.Config, "--http-listen", "127.0.0.1:0")
	admin := []string{"--config", ca.Config, "--ca", srv.URL}
	dirs := map[string]string{}
	for _, s := range []string{"ROLL-A", "ROLL-B", "ROLL-C"} {
		dirs[s] = filepath.Join(t.TempDir(), s)
		ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, dirs[s], s)
	}
	oldInter := readCert(t, filepath.Join(dirs["ROLL-A"], "chain.pem"))
	certA0 := readCert(t, filepath.Join(dirs["ROLL-A"], "device.crt"))
	certB := readCert(t, filepath.Join(dirs["ROLL-B"], "device.crt"))
	crlOld, ocspURL, _ := publicationURLs(t, certB)
	// The certificate names its partition CRL (/crl/p/<n>); the initial
	// issuer's full CRL, which the components below read, is /crl.
	if i := strings.Index(crlOld, "/crl/p/"); i >= 0 {
		crlOld = crlOld[:i] + "/crl"
	}

	st := rolloverStatus(t, admin)
	if len(st.Issuers) != 1 || st.Issuers[0].State != "active" || st.Target != hex.EncodeToString(oldInter.SubjectKeyId) {
		t.Fatalf("before any rollover: %+v, want the initial issuer active", st)
	}
	refusedStep(t, admin, "activate", "prepare")
	refusedStep(t, admin, "retire", "activate")

	out := mustRun(t, nil, caBin, append([]string{"rollover", "prepare", "--output", "json"}, admin...)...)
	var prep wire.RolloverStepResponse
	if err := json.Unmarshal([]byte(out.stdout), &prep); err != nil {
		t.Fatalf("prepare --output json: %v\n%s", err, out)
	}
	newKID := prep.Issuer.KeyID
	if prep.Issuer.State != "prepared" || newKID == "" || prep.Issuer.CrossSigned {
		t.Fatalf("prepare: %+v", prep)
	}
	for _, f := range prep.Files {
		if strings.HasSuffix(f, ".key") {
			requireMode(t, f, 0o600)
			if b, _ := os.ReadFile(f); !bytes.Contains(b, []byte("ENCRYPTED PRIVATE KEY")) {
				t.Fatalf("%s is not an encrypted PEM key", f)
			}
		}
	}
	refusedStep(t, admin, "prepare", "activate")
	refusedStep(t, admin, "retire", "activate")
	st = rolloverStatus(t, admin)
	if st.Target != newKID {
		t.Fatalf("status target %s, want the prepared %s", st.Target, newKID)
	}
	wantAdoption(t, st, 3, 0, 0)
	newInter, err := x509.ParseCertificate(httpGetDER(t, srv, "/ca/"+newKID+".crt"))
	if err != nil {
		t.Fatal(err)
	}

	// A component on pkg/pki/mtls with an old-issuer server certificate
	// accepts an old-issuer device during the overlap.
	crlNew := strings.TrimSuffix(crlOld, "/crl") + "/crl/" + newKID
	issuers := []*x509.Certificate{oldInter, newInter}
	s1Cert, s1Key := issueServerCert(t, ca, srv)
	s1 := startMTLSServer(t, filepath.Join(ca.Dir, "root.crt"), s1Cert, s1Key, []string{crlOld, crlNew}, issuers)
	if id, err := s1.call(t, dirs["ROLL-B"]); err != nil || id == "" {
		t.Fatalf("old-issuer device to old-issuer component: %q, %v", id, err)
	}

	mustRun(t, nil, caBin, append([]string{"rollover", "activate"}, admin...)...)
	refusedStep(t, admin, "activate", "prepare")
	if chain := httpGet(t, srv, "/v1/ca/chain"); !bytes.Contains(chain, pemOf(newInter)) {
		t.Fatalf("/v1/ca/chain after activate does not serve the new intermediate")
	}

	out = mustRun(t, nil, enrollBin, "renew", "--dir", dirs["ROLL-A"])
	certA := readCert(t, filepath.Join(dirs["ROLL-A"], "device.crt"))
	if hex.EncodeToString(certA.AuthorityKeyId) != newKID {
		t.Fatalf("renewed certificate's issuer %x, want the new %s\n%s", certA.AuthorityKeyId, newKID, out)
	}
	if err := verifyWithBundle(t, dirs["ROLL-A"], certA); err != nil {
		t.Fatalf("renewed certificate does not verify with the device's bundle: %v", err)
	}
	if crl, _, _ := publicationURLs(t, certA); crl != crlNew {
		t.Fatalf("new-issuer certificate names CRL %s, want %s", crl, crlNew)
	}
	// Old certificates keep verifying until they expire.
	if err := verifyWithBundle(t, dirs["ROLL-B"], certB); err != nil {
		t.Fatalf("old-issuer certificate no longer verifies: %v", err)
	}
	wantAdoption(t, rolloverStatus(t, admin), 3, 1, 1)
	text := mustRun(t, nil, caBin, append([]string{"rollover", "status"}, admin...)...)
	if !strings.Contains(text.stdout, newKID) || !regexpLine(text.stdout, `default\s+3\s+1\s+1`) {
		t.Fatalf("ca rollover status (text):\n%s", text.stdout)
	}

	// During the overlap both chains are accepted, in both directions.
	s2Cert, s2Key := issueServerCert(t, ca, srv)
	if c := readCerts(t, s2Cert)[0]; hex.EncodeToString(c.AuthorityKeyId) != newKID {
		t.Fatalf("component certificate after activate from %x, want the new issuer", c.AuthorityKeyId)
	}
	s2 := startMTLSServer(t, filepath.Join(ca.Dir, "root.crt"), s2Cert, s2Key, []string{crlOld, crlNew}, issuers)
	for name, p := range map[string]*mtlsPeer{"old-issuer component": s1, "new-issuer component": s2} {
		for _, d := range []string{"ROLL-A", "ROLL-B"} {
			if id, err := p.call(t, dirs[d]); err != nil || id == "" {
				t.Fatalf("%s refused %s: %q, %v", name, d, id, err)
			}
		}
	}

	mustRun(t, nil, caBin, append([]string{"rollover", "retire"}, admin...)...)
	refusedStep(t, admin, "retire", "activate")
	refusedStep(t, admin, "activate", "prepare")

	// Revoke an old-issuer certificate after retire: its issuer's CRL lists
	// it, OCSP (for the old issuer) says revoked; the new issuer's CRL does
	// not. And a new-issuer certificate in the new issuer's CRL and OCSP.
	mustRun(t, nil, caBin, append([]string{"certs", "revoke", certB.SerialNumber.Text(16), "--reason", "keyCompromise"}, admin...)...)
	mustRun(t, nil, caBin, append([]string{"certs", "revoke", certA.SerialNumber.Text(16), "--reason", "keyCompromise"}, admin...)...)
	oldCRL, newCRL := fetchIssuerCRL(t, crlOld, oldInter), fetchIssuerCRL(t, crlNew, newInter)
	if !crlLists(oldCRL, certB.SerialNumber) || crlLists(newCRL, certB.SerialNumber) {
		t.Fatalf("old-issuer revocation: old CRL lists it %v, new CRL %v", crlLists(oldCRL, certB.SerialNumber), crlLists(newCRL, certB.SerialNumber))
	}
	if !crlLists(newCRL, certA.SerialNumber) || crlLists(oldCRL, certA.SerialNumber) {
		t.Fatalf("new-issuer revocation: new CRL lists it %v, old CRL %v", crlLists(newCRL, certA.SerialNumber), crlLists(oldCRL, certA.SerialNumber))
	}
	if s := ocspStatus(t, ocspURL, certB, oldInter); s != ocsp.Revoked {
		t.Fatalf("OCSP for the old-issuer certificate: %d, want revoked", s)
	}
	if s := ocspStatus(t, ocspURL, certA, newInter); s != ocsp.Revoked {
		t.Fatalf("OCSP for the new-issuer certificate: %d, want revoked", s)
	}
	if s := ocspStatus(t, ocspURL, certA0, oldInter); s != ocsp.Good && s != ocsp.Revoked {
		t.Fatalf("OCSP for A's superseded old-issuer certificate: %d", s)
	}
	certC := readCert(t, filepath.Join(dirs["ROLL-C"], "device.crt"))
	if s := ocspStatus(t, ocspURL, certC, oldInter); s != ocsp.Good {
		t.Fatalf("OCSP for an untouched old-issuer certificate after retire: %d, want good", s)
	}
	ca.auditVerify(t)
}

// TestRolloverRootEndToEnd: a new root cross-signed by the old one. A
// device that trusts only the old root adopts the new one at renewal and
// its new chain verifies; a new root whose cross certificate is not signed
// by a trusted root is refused by enroll, which keeps its bundle and
// identity.
func TestRolloverRootEndToEnd(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := ca.serve(t)
	admin := []string{"--config", ca.Config, "--ca", srv.URL}
	dirA, dirB := filepath.Join(t.TempDir(), "A"), filepath.Join(t.TempDir(), "B")
	ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, dirA, "ROOT-A")
	ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, dirB, "ROOT-B")
	dirC := filepath.Join(t.TempDir(), "C") // an EST device
	estEnroll(t, estTarget{URL: srv.URL, Fingerprint: ca.Fingerprint, Token: ca.mintToken(t, srv).Token}, dirC, "ROOT-C")
	oldRoot := readCert(t, filepath.Join(ca.Dir, "root.crt"))

	out := mustRun(t, nil, caBin, append([]string{"rollover", "prepare", "--root", "--output", "json"}, admin...)...)
	var prep wire.RolloverStepResponse
	if err := json.Unmarshal([]byte(out.stdout), &prep); err != nil || !prep.Issuer.CrossSigned || prep.Issuer.Kind != "root" {
		t.Fatalf("prepare --root: %+v %v\n%s", prep, err, out)
	}
	bundle := parsePEMCerts(t, httpGet(t, srv, "/v1/ca/roots"))
	if len(bundle) != 3 || !bundle[0].Equal(oldRoot) || bundle[1].Subject.String() != bundle[2].Subject.String() ||
		bundle[2].CheckSignatureFrom(oldRoot) != nil {
		t.Fatalf("trust bundle after prepare --root: want old root, new root, cross certificate by the old root; got %d certificates", len(bundle))
	}
	newRoot := bundle[1]
	mustRun(t, nil, caBin, append([]string{"rollover", "activate"}, admin...)...)

	res := mustRun(t, nil, enrollBin, "renew", "--dir", dirA)
	if !strings.Contains(res.stderr, "adopted root") {
		t.Fatalf("renewal after a root rollover: no 'adopted root' line:\n%s", res)
	}
	roots := readCerts(t, filepath.Join(dirA, "root.crt"))
	if len(roots) != 2 || !roots[0].Equal(oldRoot) || !roots[1].Equal(newRoot) {
		t.Fatalf("device bundle after renewal: %d roots, want the pinned old root then the new one", len(roots))
	}
	certA := readCert(t, filepath.Join(dirA, "device.crt"))
	if err := verifyWithBundle(t, dirA, certA); err != nil {
		t.Fatalf("new chain does not verify with the device's bundle: %v", err)
	}
	chains, err := certA.Verify(x509.VerifyOptions{Roots: poolOf(newRoot), Intermediates: poolOf(readCerts(t, filepath.Join(dirA, "chain.pem"))...),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil || !chains[0][len(chains[0])-1].Equal(newRoot) {
		t.Fatalf("renewed certificate does not chain to the new root: %v", err)
	}
	// 'enroll status' still loads the identity (pinned root first).
	mustRun(t, nil, enrollBin, "status", "--dir", dirA)
	wantAdoption(t, rolloverStatus(t, admin), 3, 1, 1)

	// The EST agent refreshes its bundle from cacerts (RFC 7030 §4.1.3:
	// roots and the cross certificate) at its renewal the same way.
	res = mustRun(t, nil, enrollBin, "renew", "--dir", dirC)
	if !strings.Contains(res.stderr, "adopted root") {
		t.Fatalf("EST renewal after a root rollover: no 'adopted root' line:\n%s", res)
	}
	if err := verifyWithBundle(t, dirC, readCert(t, filepath.Join(dirC, "device.crt"))); err != nil {
		t.Fatalf("EST device's new chain does not verify with its bundle: %v", err)
	}
	wantAdoption(t, rolloverStatus(t, admin), 3, 2, 2)

	// A second root rollover whose cross certificate is forged (signed by
	// a key no device trusts): enroll refuses the new root.
	mustRun(t, nil, caBin, append([]string{"rollover", "retire"}, admin...)...)
	out = mustRun(t, nil, caBin, append([]string{"rollover", "prepare", "--root", "--output", "json"}, admin...)...)
	if err := json.Unmarshal([]byte(out.stdout), &prep); err != nil {
		t.Fatal(err)
	}
	forgeCross(t, ca, prep.Issuer.KeyID)
	// Restarted on the same address (the device recorded it): the server
	// serves the tampered issuer from the registry.
	srv.Stop()
	if _, err := tryStartServer(t, strings.TrimPrefix(srv.URL, "https://"), []string{"--config", ca.Config}); err != nil {
		t.Fatalf("restart ca serve: %v", err)
	}
	mustRun(t, nil, caBin, append([]string{"rollover", "activate"}, admin...)...)
	certB := readFile(t, filepath.Join(dirB, "device.crt"))
	res = run(t, nil, enrollBin, "renew", "--dir", dirB)
	if res.code == 0 || !strings.Contains(res.stderr, "refused a new root") || !strings.Contains(res.stderr, prep.Issuer.RootFingerprint) {
		t.Fatalf("renewal onto a root with a forged cross certificate: want a refusal naming root %s, got %s", prep.Issuer.RootFingerprint, res)
	}
	// B may adopt the first new root (its cross certificate is genuine and
	// still served), never the forged one; its identity is unchanged.
	for _, r := range readCerts(t, filepath.Join(dirB, "root.crt")) {
		if fingerprint(r) == prep.Issuer.RootFingerprint {
			t.Fatalf("the device trusts the root with a forged cross certificate")
		}
	}
	if !bytes.Equal(certB, readFile(t, filepath.Join(dirB, "device.crt"))) {
		t.Fatalf("a refused renewal changed the device's identity")
	}
	ca.auditVerify(t)
}

// forgeCross replaces the cross certificate of issuer kid in the registry
// by one with the same subject and key signed by a throwaway root: what a
// CA that lost its old root key, or an attacker, could serve.
func forgeCross(t *testing.T, ca *testCA, kid string) {
	t.Helper()
	db := ca.openSQL(t)
	var crossPEM string
	if err := db.QueryRow(`SELECT cross_pem FROM ca_issuers WHERE key_id = ?`, kid).Scan(&crossPEM); err != nil {
		t.Fatal(err)
	}
	cross := parsePEMCerts(t, []byte(crossPEM))[0]
	key := newECKey(t)
	forger := signTemplate(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Forger Root"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}, nil, key.Public(), key)
	tmpl := *cross
	forged := signTemplate(t, &tmpl, forger, cross.PublicKey, key)
	if _, err := db.ExecContext(context.Background(), `UPDATE ca_issuers SET cross_pem = ? WHERE key_id = ?`, string(pemOf(forged)), kid); err != nil {
		t.Fatal(err)
	}
}

func httpGetDER(t *testing.T, srv *server, path string) []byte {
	t.Helper()
	return httpGet(t, srv, path)
}

func parsePEMCerts(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

func poolOf(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// regexpLine reports whether a line of s matches expr.
func regexpLine(s, expr string) bool {
	return regexp.MustCompile(`(?m)^` + expr).MatchString(s)
}
