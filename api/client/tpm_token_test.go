package client

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"testing"

	"devpki/api/wire"
)

// TestTPMChallengeWithToken: the token goes as 'Authorization: Bearer', as
// Enroll sends it; TPMChallenge sends no Authorization header.
func TestTPMChallengeWithToken(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "CA")
	pool := x509.NewCertPool()
	pool.AddCert(ca.Root)
	srv := startServer(t, ca.serverCert(t), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/enroll/tpm/challenge" {
			http.Error(w, "bad route", http.StatusNotFound)
			return
		}
		var req wire.TPMChallengeRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		// The serial says which Authorization the test expects.
		want := map[string]string{"with-token": "Bearer dpk_tok-1", "without": ""}[req.Serial]
		if got := r.Header.Get("Authorization"); got != want {
			http.Error(w, "Authorization "+got+", want "+want, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(wire.TPMChallengeResponse{ChallengeID: "ch-1", Credential: []byte{1}, Secret: []byte{2}, Nonce: []byte{3}})
	}))
	c, err := New(srv.URL, WithRoots(pool))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if ch, err := c.TPMChallengeWithToken(ctx, "dpk_tok-1", &wire.TPMChallengeRequest{Serial: "with-token"}); err != nil || ch.ChallengeID != "ch-1" {
		t.Errorf("TPMChallengeWithToken = %+v, %v", ch, err)
	}
	if _, err := c.TPMChallenge(ctx, &wire.TPMChallengeRequest{Serial: "without"}); err != nil {
		t.Errorf("TPMChallenge: %v", err)
	}
	if _, err := c.TPMChallengeWithToken(ctx, "", &wire.TPMChallengeRequest{Serial: "without"}); err != nil {
		t.Errorf("TPMChallengeWithToken(no token): %v", err)
	}
}
