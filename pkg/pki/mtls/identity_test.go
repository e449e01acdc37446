package mtls

import (
	"crypto/tls"
	"errors"
	"testing"

	"devpki/pkg/pki/pkitest"
)

func TestPeerIdentity(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	src, srv := e.server(nil)
	dc, dk, dis := e.issueDevice("device", "SN-1")
	ac, ak, ais := e.issueAdmin("admin", "alice")
	sc, sk, sis := e.issueServer("other-server") // a valid chain, but no devpki identity

	tests := []struct {
		name       string
		cert, key  string
		want       Identity
		wantSerial string
		wantErr    error
	}{
		{name: "device", cert: dc, key: dk, wantSerial: dis.Certificate.SerialNumber.Text(16),
			want: Identity{Role: RoleDevice, Tenant: "acme", DeviceID: "dev-SN-1", Serial: "SN-1"}},
		{name: "admin", cert: ac, key: ak, wantSerial: ais.Certificate.SerialNumber.Text(16),
			want: Identity{Role: RoleAdmin, Tenant: "acme", AdminName: "alice"}},
		{name: "server certificate", cert: sc, key: sk, wantSerial: sis.Certificate.SerialNumber.Text(16), wantErr: ErrUnknownPeer},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := dial(srv.addr, plainClientConfig(t, e.ca.Roots(), tc.cert, tc.key)); err != nil {
				t.Fatal(err)
			}
			r := result(t, srv)
			id, err := src.PeerIdentity(&r.state)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id.Role != tc.want.Role || id.Tenant != tc.want.Tenant || id.DeviceID != tc.want.DeviceID ||
				id.Serial != tc.want.Serial || id.AdminName != tc.want.AdminName || id.CertSerial != tc.wantSerial {
				t.Errorf("identity %+v, want %+v with cert serial %s", id, tc.want, tc.wantSerial)
			}
			if tc.want.Role == RoleDevice && (len(id.MACs) != 1 || id.MACs[0] != "020000000001") {
				t.Errorf("MACs %v", id.MACs)
			}
			// Another trust domain reads nothing.
			if _, err := PeerIdentity(&r.state, "other.example"); !errors.Is(err, ErrUnknownPeer) {
				t.Errorf("other trust domain: %v, want ErrUnknownPeer", err)
			}
		})
	}
	// Unverified peer certificates are never read.
	if _, err := PeerIdentity(&tls.ConnectionState{PeerCertificates: dis.Chain}, pkitest.TrustDomain); !errors.Is(err, ErrNoPeer) {
		t.Errorf("unverified: %v, want ErrNoPeer", err)
	}
	if _, err := PeerIdentity(nil, pkitest.TrustDomain); !errors.Is(err, ErrNoPeer) {
		t.Errorf("nil: %v, want ErrNoPeer", err)
	}
}
