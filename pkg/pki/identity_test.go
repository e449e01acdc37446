package pki_test

import (
	"net/url"
	"strings"
	"testing"

	"devpki/pkg/pki"
)

func TestNormalizeMAC(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string // want "" means rejected
	}{
		{"aa:bb:cc:dd:ee:0f", "aabbccddee0f"},
		{"AA:BB:CC:DD:EE:0F", "aabbccddee0f"},
		{"AA-BB-CC-DD-EE-0F", "aabbccddee0f"},
		{"aabb.ccdd.ee0f", "aabbccddee0f"},
		{"AABB.CCDD.EE0F", "aabbccddee0f"},
		{"aabbccddee0f", "aabbccddee0f"},
		{"AaBbCcDdEe0F", "aabbccddee0f"},
		{"01:00:5e:00:00:01", "01005e000001"}, // multicast is a valid address
		{"", ""},
		{"aa:bb:cc:dd:ee", ""},
		{"aa:bb:cc:dd:ee:ff:00", ""},
		{"aa:bb-cc:dd:ee:0f", ""}, // mixed separators
		{"aa.bb.cc.dd.ee.0f", ""},
		{"aabb:ccdd:ee0f", ""},
		{"aabb.ccdd-ee0f", ""},
		{"aabbccddee0g", ""},
		{"aabbccddee0", ""},
		{"aabbccddee0f0", ""},
		{" aabbccddee0f", ""},
		{"aabbccddee0f\n", ""},
		{"aa:bb:cc:dd:ee:0f ", ""},
		{"a:bb:cc:dd:ee:0ff", ""},
		{"000000000000", ""},
		{"00:00:00:00:00:00", ""},
		{"ff:ff:ff:ff:ff:ff", ""},
		{"FFFF.FFFF.FFFF", ""},
		{"+a:bb:cc:dd:ee:0f", ""},
		{"ａa:bb:cc:dd:ee:0", ""}, // non-ASCII
	}
	for _, tt := range tests {
		got, err := pki.NormalizeMAC(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("NormalizeMAC(%q) = %q, want error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("NormalizeMAC(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestValidateSerial(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in string
		ok bool
	}{
		{"SN123", true},
		{"a.b_c:d/e-f", true},
		{strings.Repeat("x", 64), true},
		{strings.Repeat("x", 65), false},
		{"", false},
		{"has space", false},
		{"tab\t", false},
		{"nl\n", false},
		{"nul\x00", false},
		{"é", false},
		{"a+b", false},
		{"a%2Fb", false},
		{".", false},
		{"..", false},
	}
	for _, tt := range tests {
		if err := pki.ValidateSerial(tt.in); (err == nil) != tt.ok {
			t.Errorf("ValidateSerial(%q) = %v, want ok=%v", tt.in, err, tt.ok)
		}
	}
}

func TestSPIFFEAndMACURIs(t *testing.T) {
	t.Parallel()
	id := pki.Identity{DeviceID: "d1", Tenant: "acme", Serial: "SN/1:2", TrustDomain: "devpki.local"}
	if got, want := id.SPIFFEID().String(), "spiffe://devpki.local/acme/device/SN%2F1:2"; got != want {
		t.Errorf("SPIFFEID = %q, want %q", got, want)
	}
	if got, want := pki.MACURI("aabbccddeeff").String(), "urn:dev:mac:aabbccddeeff"; got != want {
		t.Errorf("MACURI = %q, want %q", got, want)
	}
	u := pki.AdminURI("devpki.local", "acme", "alice@example.com")
	if got, want := u.String(), "spiffe://devpki.local/acme/admin/alice@example.com"; got != want {
		t.Errorf("AdminURI = %q, want %q", got, want)
	}
	// A round trip through the string form, as a certificate parser sees it.
	parsed, err := url.Parse(u.String())
	if err != nil {
		t.Fatal(err)
	}
	if tenant, name, ok := pki.ParseAdminURI(parsed, "devpki.local"); !ok || tenant != "acme" || name != "alice@example.com" {
		t.Errorf("ParseAdminURI = %q, %q, %v", tenant, name, ok)
	}
	for _, bad := range []string{
		"spiffe://other.local/acme/admin/alice",
		"spiffe://devpki.local/acme/device/alice",
		"spiffe://devpki.local/acme/admin/alice/extra",
		"spiffe://devpki.local/acme/admin/",
		"spiffe://devpki.local//admin/alice",
		"spiffe://devpki.local/ac%20me/admin/alice",
		"spiffe://devpki.local/acme/admin/alice?x=1",
		"spiffe://devpki.local/acme/admin/alice#f",
		"https://devpki.local/acme/admin/alice",
		"spiffe://devpki.local/acme/admin/al%20ice",
	} {
		u, err := url.Parse(bad)
		if err != nil {
			t.Fatal(err)
		}
		if tenant, name, ok := pki.ParseAdminURI(u, "devpki.local"); ok {
			t.Errorf("ParseAdminURI(%q) = %q, %q, true; want false", bad, tenant, name)
		}
	}
}
