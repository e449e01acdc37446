package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"devpki/api/wire"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// TestEnrollOneTokenManyDevices: 50 devices, each on its own TLS connection,
// race for one single-use token; 20 race for a 5-use token.
func TestEnrollOneTokenManyDevices(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name        string
		uses, racer int
	}{
		{"single-use token, 50 devices", 1, 50},
		{"5-use token, 20 devices", 5, 20},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			tok := f.mint(provision.TokenSpec{Uses: tt.uses})
			bodies := make([][]byte, tt.racer)
			for i := range bodies {
				bodies[i] = enrollBody(t, f.csr(fmt.Sprintf("SN-RACE-%03d", i), fmt.Sprintf("02:00:00:00:%02x:%02x", i/256, i%256+1)))
			}
			type result struct {
				status int
				slug   string
				err    error
			}
			results := make([]result, tt.racer)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range bodies {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := f.oneShotClient()
					<-start
					resp, b, err := f.do(c, http.MethodPost, "/v1/enroll", tok, "application/json", bytes.NewReader(bodies[i]))
					if err != nil {
						results[i].err = err
						return
					}
					results[i].status = resp.StatusCode
					if resp.StatusCode != http.StatusCreated {
						var p wire.Problem
						_ = json.Unmarshal(b, &p)
						results[i].slug = p.Slug()
					}
				}()
			}
			close(start)
			wg.Wait()

			var created, spent int
			for i, r := range results {
				switch {
				case r.err != nil:
					t.Errorf("request %d: %v", i, r.err)
				case r.status == http.StatusCreated:
					created++
				case r.status == http.StatusUnauthorized && r.slug == "token-spent":
					spent++
				default:
					t.Errorf("request %d: %d %s", i, r.status, r.slug)
				}
			}
			if created != tt.uses || spent != tt.racer-tt.uses {
				t.Errorf("%d created, %d token-spent; want %d and %d", created, spent, tt.uses, tt.racer-tt.uses)
			}
			var devices, deviceCerts int
			if err := f.db.QueryRow("SELECT COUNT(*) FROM devices").Scan(&devices); err != nil {
				t.Fatal(err)
			}
			if err := f.db.QueryRow("SELECT COUNT(*) FROM certificates WHERE kind = ?", string(registry.KindDevice)).Scan(&deviceCerts); err != nil {
				t.Fatal(err)
			}
			if devices != tt.uses || deviceCerts != tt.uses {
				t.Errorf("%d devices and %d device certificates in the store, want %d each", devices, deviceCerts, tt.uses)
			}
			if n := f.usesLeft(tok); n != 0 {
				t.Errorf("token uses left %d, want 0", n)
			}
		})
	}
}

// TestEnrollSameSerialRace: ten devices claim one serial at once, each with
// its own single-use token. One wins; the others get 409 serial-conflict and,
// since their issuance failed, keep their tokens (DESIGN invariant 2).
func TestEnrollSameSerialRace(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const n = 10
	toks, bodies := make([]string, n), make([][]byte, n)
	for i := range n {
		toks[i] = f.mint(provision.TokenSpec{})
		bodies[i] = enrollBody(t, f.csr("SN-CLONE"))
	}
	status, slugs := make([]int, n), make([]string, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := f.oneShotClient()
			<-start
			resp, b, err := f.do(c, http.MethodPost, "/v1/enroll", toks[i], "application/json", bytes.NewReader(bodies[i]))
			if err != nil {
				slugs[i] = err.Error()
				return
			}
			status[i] = resp.StatusCode
			var p wire.Problem
			if json.Unmarshal(b, &p) == nil {
				slugs[i] = p.Slug()
			}
		}()
	}
	close(start)
	wg.Wait()
	var won int
	for i := range n {
		switch {
		case status[i] == http.StatusCreated:
			won++
			if u := f.usesLeft(toks[i]); u != 0 {
				t.Errorf("winning token has %d uses left", u)
			}
		case status[i] == http.StatusConflict && slugs[i] == "serial-conflict":
			if u := f.usesLeft(toks[i]); u != 1 {
				t.Errorf("losing token %d: %d uses left, want 1 (a failed issuance spends nothing)", i, u)
			}
		default:
			t.Errorf("request %d: %d %s", i, status[i], slugs[i])
		}
	}
	if won != 1 {
		t.Fatalf("%d enrollments of one serial succeeded, want 1", won)
	}
	if c := f.counts(); c.devices != 1 || c.certs != 1 {
		t.Errorf("store holds %d devices and %d certificates, want 1 and 1", c.devices, c.certs)
	}
}
