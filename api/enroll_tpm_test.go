package api_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"devpki/api/client"
	"devpki/api/wire"
	"devpki/pkg/provision"
	"devpki/pkg/tpm/verify"
)

// TestTPMEnrollDisabledAndMalformed: without TPM configuration the routes
// answer 404 tpm-disabled (audited); malformed bodies are 400.
func TestTPMEnrollDisabledAndMalformed(t *testing.T) {
	f := newFixture(t)
	c, err := client.New(f.url, client.WithRoots(f.ca.Roots()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	check := func(err error, status int, slug string) {
		t.Helper()
		var re *client.ResponseError
		if !errors.As(err, &re) || re.Problem == nil || re.StatusCode != status || re.Problem.Slug() != slug {
			t.Errorf("error = %v, want %d %s", err, status, slug)
		}
	}
	_, err = c.TPMChallenge(ctx, &wire.TPMChallengeRequest{EKCert: []byte{1}, Serial: "SN1"})
	check(err, http.StatusNotFound, wire.SlugTPMDisabled)
	_, err = c.TPMEnroll(ctx, &wire.TPMEnrollRequest{ChallengeID: "x", CSR: string(f.csr("SN1"))})
	check(err, http.StatusNotFound, wire.SlugTPMDisabled)
	// A closed door answers so whatever the body.
	_, err = c.TPMEnroll(ctx, &wire.TPMEnrollRequest{ChallengeID: "x"})
	check(err, http.StatusNotFound, wire.SlugTPMDisabled)

	// With TPM enrollment on, an answer without a CSR is refused before the
	// challenge is looked at, and audited.
	on := newFixtureTPM(t, &provision.TPMConfig{Challenger: verify.NewChallenger(verify.Config{})})
	c, err = client.New(on.url, client.WithRoots(on.ca.Roots()))
	if err != nil {
		t.Fatal(err)
	}
	// Anonymous: counted in the refusal log, not chained.
	hits := on.refusalHits("enroll.tpm")
	_, err = c.TPMEnroll(ctx, &wire.TPMEnrollRequest{ChallengeID: "x"})
	check(err, http.StatusBadRequest, wire.SlugBadCSR)
	if on.refusalHits("enroll.tpm") != hits+1 {
		t.Error("the refused answer left no refusal counted")
	}
	hits = on.refusalHits("enroll.tpm.challenge")
	_, err = c.TPMChallenge(ctx, &wire.TPMChallengeRequest{EKCert: []byte{1}, EKPub: []byte{2}, Serial: "SN1"})
	check(err, http.StatusBadRequest, wire.SlugBadRequest)
	if on.refusalHits("enroll.tpm.challenge") != hits+1 {
		t.Error("the refused challenge left no refusal counted")
	}
}
