package api_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"devpki/api"
	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
)

// presentedCert is a stand-in IDevID attestor for the EST door's wiring:
// it admits the client certificate presented (Request.PeerCerts) into the
// default tenant for the serial it names, and records what it was given.
// The real one (verified against registry-held manufacturer roots) is
// provision's.
type presentedCert struct {
	tenantID string
	got      chan []byte
}

func (a presentedCert) Admit(_ context.Context, req *provision.Request) (*provision.Admission, error) {
	if len(req.PeerCerts) == 0 {
		return nil, errors.New("no client certificate")
	}
	a.got <- req.PeerCerts[0].Raw
	return &provision.Admission{Method: "idevid", TenantID: a.tenantID, BoundSerial: req.PeerCerts[0].Subject.SerialNumber,
		BoundBy: "idevid", Actor: provision.Actor{Kind: provision.ActorAnonymous, Source: req.SourceAddr}}, nil
}

// TestESTIDevIDDoor: on simpleenroll, a client certificate that is not one
// of this CA (and no token) goes to Attestors.IDevID with the presented
// certificates; the enrollment then runs the one pipeline (a label of
// another tenant is refused there), and a token, when one is sent, wins.
func TestESTIDevIDDoor(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	if _, err := provision.CreateTenant(ctx, f.store, provision.TenantSpec{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	prov, err := provision.New(provision.Config{Store: f.store, Issuer: f.ca.Issuer, TrustDomain: pkitest.TrustDomain})
	if err != nil {
		t.Fatal(err)
	}
	idevid := presentedCert{tenantID: f.tenant.ID, got: make(chan []byte, 4)}
	handler, err := api.New(api.Config{
		Store: f.store, Provision: prov, Admin: f.admin, Root: f.ca.CA.Root, Chain: f.ca.Issuer.Chain(),
		Attestors:   provision.Attestors{Token: provision.TokenAttestor{Store: f.store}, IDevID: idevid},
		TrustDomain: pkitest.TrustDomain, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss, err := f.ca.Issuer.IssueServer(ctx, &pki.ServerRequest{PublicKey: srvKey.Public(), CommonName: "devpki test CA",
		IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(handler)
	srv.TLS = api.TLSConfig(tlsCert(iss, srvKey), false)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	g := &fixture{t: t, ca: f.ca, url: srv.URL}

	const serial = "SN-EST-IDEVID"
	maker := pkitest.NewCA(t) // the device maker's CA, unknown to this one
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	factory := maker.IssueDevice(t, pkitestIdentity(serial), key)
	client := f.newClient(&tls.Certificate{Certificate: [][]byte{factory.Certificate.Raw}, PrivateKey: key})
	body := func() io.Reader { return bytes.NewReader(b64CSR(t, f.csr(serial))) }

	before := f.counts()
	resp, b := g.estReq(client, http.MethodPost, estPath+"/acme/simpleenroll", "application/pkcs10", body(), nil)
	estRefused(t, resp, b, http.StatusForbidden, wire.SlugForbidden)
	if f.counts() != before {
		t.Error("a refused IDevID enrollment wrote")
	}
	if got := <-idevid.got; !bytes.Equal(got, factory.Certificate.Raw) {
		t.Error("the IDevID attestor was not given the presented certificate")
	}

	resp, b = g.estReq(client, http.MethodPost, estPath+"/simpleenroll", "application/pkcs10", body(), nil)
	c := estCerts(t, resp, b)[0]
	if c.Subject.SerialNumber != serial {
		t.Fatalf("issued %s", c.Subject)
	}
	<-idevid.got
	if d := f.device(serial); d == nil || d.Method != "idevid" {
		t.Fatalf("device %+v, want enrolled by idevid", d)
	}

	// With a token as well, the token admits (the IDevID attestor is not asked).
	tok := f.mint(provision.TokenSpec{})
	resp, b = g.estReq(client, http.MethodPost, estPath+"/simpleenroll", "application/pkcs10",
		bytes.NewReader(b64CSR(t, f.csr("SN-EST-IDEVID-TOKEN"))), basic("", tok))
	estCerts(t, resp, b)
	if len(idevid.got) != 0 || f.usesLeft(tok) != 0 {
		t.Errorf("token and certificate: IDevID attestor asked %d times, token uses left %d", len(idevid.got), f.usesLeft(tok))
	}
	if d := f.device("SN-EST-IDEVID-TOKEN"); d == nil || d.Method != provision.MethodToken {
		t.Errorf("device %+v, want enrolled by token", d)
	}
}
