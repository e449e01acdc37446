package api_test

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"golang.org/x/crypto/ocsp"

	"devpki/api/wire"
	"devpki/pkg/provision"
	"devpki/pkg/tpm/verify"
)

// fuzzRoutes are the doors a stranger can knock on without a client
// certificate, plus an admin route (refused without one).
var fuzzRoutes = []struct{ method, path string }{
	{http.MethodPost, "/v1/enroll"},
	{http.MethodPost, "/v1/enroll/tpm/challenge"},
	{http.MethodPost, "/v1/enroll/tpm"},
	{http.MethodPost, "/v1/renew"},
	{http.MethodPost, "/ocsp"},
	{http.MethodGet, "/ocsp/"},
	{http.MethodPost, "/v1/admin/tokens"},
	{http.MethodPost, "/.well-known/est/simpleenroll"},
	{http.MethodPost, "/.well-known/est/default/simplereenroll"},
	{http.MethodPost, "/.well-known/est/default/simpleenroll"},
	{http.MethodPost, "/v1/renew/expired/challenge"},
	{http.MethodPost, "/v1/renew/expired"},
}

// FuzzRequests sends fuzzed requests (JSON, DER, base64 EST bodies) through the whole API handler, over a
// real SQLite registry: every answer is a 4xx problem (never a 5xx or a
// panic), OCSP answers are OCSP responses, and nothing but the audit log
// changes. The seeds are good-shaped bodies for each door (a real CSR, a
// real OCSP request, TPM JSON) so mutations start near what the decoders
// accept. CI runs it for a few seconds (test/run.sh); run it longer with
//
//	go test -run '^$' -fuzz FuzzRequests -fuzztime 10m ./api
func FuzzRequests(f *testing.F) {
	fx := newFixtureTPM(f, &provision.TPMConfig{Challenger: verify.NewChallenger(verify.Config{})})
	csr := fx.csr("SN-FUZZ-1")
	enroll, _ := json.Marshal(wire.EnrollRequest{CSR: string(csr)})
	ocspReq, err := ocsp.CreateRequest(fx.ca.CA.Intermediate, fx.ca.CA.Root, &ocsp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		f.Fatal(err)
	}
	challenge, _ := json.Marshal(wire.TPMChallengeRequest{EKPub: []byte{0x30, 0x82}, Serial: "SN-FUZZ-2", MACs: []string{"02:00:00:00:00:02"}})
	answer, _ := json.Marshal(wire.TPMEnrollRequest{ChallengeID: "00", CSR: string(csr)})
	f.Add(uint8(0), enroll, "Bearer not-a-token", "application/json")
	f.Add(uint8(0), []byte(`{"csr":"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"}`), "Bearer x", "application/json")
	f.Add(uint8(1), challenge, "", "application/json")
	f.Add(uint8(2), answer, "", "application/json")
	f.Add(uint8(3), []byte(`{}`), "", "application/json")
	f.Add(uint8(4), ocspReq, "", "application/ocsp-request")
	f.Add(uint8(5), []byte(base64.StdEncoding.EncodeToString(ocspReq)), "", "")
	f.Add(uint8(6), []byte(`{"uses":1}`), "", "application/json")
	// EST: a base64 DER PKCS#10 with the token as the Basic password.
	blk, _ := pem.Decode(csr)
	est := []byte(base64.StdEncoding.EncodeToString(blk.Bytes))
	f.Add(uint8(7), est, "Basic "+base64.StdEncoding.EncodeToString([]byte("SN-FUZZ-1:not-a-token")), "application/pkcs10")
	f.Add(uint8(8), est, "", "application/pkcs10")
	f.Add(uint8(9), append(est, "\r\n="...), "Bearer x", "application/pkcs10; charset=utf-8")

	certPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: fx.ca.CA.Intermediate.Raw}))
	expiredCh, _ := json.Marshal(wire.ExpiredChallengeRequest{Certificate: certPEM})
	expiredAns, _ := json.Marshal(wire.RenewExpiredRequest{ChallengeID: "00", Certificate: certPEM, Signature: []byte{1}, CSR: string(csr)})
	f.Add(uint8(10), expiredCh, "", "application/json")
	f.Add(uint8(11), expiredAns, "", "application/json")

	handler := fx.srv.Config.Handler
	before := fx.counts()
	f.Fuzz(func(t *testing.T, route uint8, body []byte, auth, contentType string) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		var req *http.Request
		if rt.method == http.MethodGet {
			req = httptest.NewRequest(rt.method, rt.path+url.PathEscape(string(body)), nil)
		} else {
			req = httptest.NewRequest(rt.method, rt.path, bytes.NewReader(body))
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		switch {
		case rec.Code >= 500:
			t.Fatalf("%s %s: %d %s", rt.method, rt.path, rec.Code, rec.Body.Bytes())
		case rt.path == "/ocsp" || rt.path == "/ocsp/":
			if rec.Code == http.StatusOK {
				if _, err := ocsp.ParseResponse(rec.Body.Bytes(), nil); err != nil && !isOCSPError(err) {
					t.Fatalf("OCSP answer does not parse: %v", err)
				}
			}
		case rec.Code < 400:
			t.Fatalf("%s %s accepted a fuzzed request: %d %s", rt.method, rt.path, rec.Code, rec.Body.Bytes())
		}
		if after := rowCounts(t, fx); after != before {
			t.Fatalf("%s %s changed the registry: %+v -> %+v", rt.method, rt.path, before, after)
		}
	})
}

// rowCounts is fixture.counts for use inside a fuzz target (which must
// not call the fixture's *testing.F).
func rowCounts(t *testing.T, fx *fixture) counts {
	var c counts
	for table, dst := range map[string]*int{"devices": &c.devices, "certificates": &c.certs, "tokens": &c.tokens} {
		if err := fx.db.QueryRow("SELECT COUNT(*) FROM " + table).Scan(dst); err != nil {
			t.Fatalf("count %s: %v", table, err)
		}
	}
	return c
}

// isOCSPError reports whether err is an unsigned OCSP error response
// (malformedRequest and the like): a valid answer to a bad request.
func isOCSPError(err error) bool {
	_, ok := err.(ocsp.ResponseError)
	return ok
}
