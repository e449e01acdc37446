package pki_test

import (
	"errors"
	"math/rand/v2"
	"net/url"
	"path"
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
		// Hostile input.
		{"aabbccddee0\x00", ""},
		{"aa:bb:cc:dd:ee:0\x00", ""},
		{"aabbccdd\r\nee0f", ""},
		{"aabbccddee0f\r\n", ""},
		{"aa:bb:cc:dd:ee:\r\n", ""},
		{"аabbccddee0f", ""},      // Cyrillic а
		{"aabbccddee0\u0444", ""}, // Cyrillic ф
		{"aabbccddee０f", ""},      // fullwidth 0
		{"aa%3Abb%3Acc%3Add%3Aee%3A0f", ""},
		{strings.Repeat("a", 65), ""},
		{strings.Repeat("aa:", 22), ""},
		{strings.Repeat("ab", 1<<15), ""},
	}
	for _, tt := range tests {
		got, err := pki.NormalizeMAC(tt.in)
		if tt.want == "" {
			if err == nil || got != "" {
				t.Errorf("NormalizeMAC(%q) = %q, want error", tt.in, got)
			} else if !errors.Is(err, pki.ErrBadMAC) {
				t.Errorf("NormalizeMAC(%q) = %v, want ErrBadMAC", tt.in, err)
			} else if len(err.Error()) > 200 {
				t.Errorf("NormalizeMAC(%d bytes): error of %d bytes", len(tt.in), len(err.Error()))
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
		{"a.b_c-D", true},
		{"...", true}, // not a dot segment
		{".a", true},
		{"a..b", true},
		{"-", true},
		{strings.Repeat("x", 64), true},
		// Hostile or outside the SPIFFE segment set: refused, never escaped.
		{strings.Repeat("x", 65), false},
		{strings.Repeat("x", 1<<16), false},
		{"", false},
		{".", false},
		{"..", false},
		{"has space", false},
		{"tab\t", false},
		{"nl\n", false},
		{"cr\r", false},
		{"crlf\r\nX-Injected: 1", false},
		{"nul\x00", false},
		{"\x00", false},
		{"del\x7f", false},
		{"a/b", false},
		{"/", false},
		{"x/../../admin/root", false},
		{"../admin", false},
		{"a\\b", false},
		{"a:b", false},
		{"a%2Fb", false},
		{"a%2fb", false},
		{"%2E%2E", false},
		{"%", false},
		{"50%", false},
		{"a+b", false},
		{"a?b", false},
		{"a#b", false},
		{"a@b", false},
		{"é", false},
		{"SN-\u0410", false},       // Cyrillic А
		{"\u0410BC-1", false},      // Cyrillic А leading
		{"SN-\uff11\uff12", false}, // fullwidth digits
		{"SN\u2010001", false},     // Unicode hyphen
		{"SN\u200b001", false},     // zero-width space
		{"SN\u2024\u2024", false},  // one-dot leaders
		{"SN\xff", false},          // invalid UTF-8
	}
	for _, tt := range tests {
		err := pki.ValidateSerial(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateSerial(%q) = %v, want ok=%v", tt.in, err, tt.ok)
		}
		if err != nil && !errors.Is(err, pki.ErrBadSerial) {
			t.Errorf("ValidateSerial(%q) = %v, want ErrBadSerial", tt.in, err)
		}
		if err != nil && len(err.Error()) > 200 {
			t.Errorf("ValidateSerial(%d bytes): error of %d bytes", len(tt.in), len(err.Error()))
		}
	}
}

// segmentChars is the SPIFFE path segment alphabet.
const segmentChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"

// validSerials returns every valid serial of 1 and 2 characters, some
// longer ones built from the dot and the other punctuation, and n random
// ones of 1..64 characters.
func validSerials(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for _, a := range segmentChars {
		out = append(out, string(a))
		for _, b := range segmentChars {
			out = append(out, string(a)+string(b))
		}
	}
	out = append(out, "...", "....", "._.", "-..", "..-", "a.", ".a", strings.Repeat(".", 64), strings.Repeat("-", 64))
	r := rand.New(rand.NewPCG(1, 2))
	for range n {
		b := make([]byte, 1+r.IntN(64))
		for i := range b {
			b[i] = segmentChars[r.IntN(len(segmentChars))]
		}
		out = append(out, string(b))
	}
	var valid []string
	for _, s := range out {
		if pki.ValidateSerial(s) == nil {
			valid = append(valid, s)
		} else if s != "." && s != ".." {
			t.Fatalf("ValidateSerial(%q) refused a serial of the SPIFFE segment set", s)
		}
	}
	return valid
}

// TestSPIFFEIDInjective: no two valid serials share a SPIFFE ID, every ID
// is its own path.Clean (nothing path-cleans into another identity), needs
// no escaping and reads back, through a URL parser, as the same path.
func TestSPIFFEIDInjective(t *testing.T) {
	t.Parallel()
	seen := map[string]string{}
	for _, serial := range validSerials(t, 5000) {
		u := pki.Identity{Tenant: "acme", Serial: serial, TrustDomain: "devpki.local"}.SPIFFEID()
		s := u.String()
		if prev, dup := seen[s]; dup && prev != serial {
			t.Fatalf("serials %q and %q share SPIFFE ID %s", prev, serial, s)
		}
		seen[s] = serial
		checkSPIFFEPath(t, s, "/acme/device/"+serial)
	}
}

// checkSPIFFEPath parses id as a relying party would and checks that its
// path is want, unescaped, path-clean and made of SPIFFE segments.
func checkSPIFFEPath(t *testing.T, id, want string) {
	t.Helper()
	if strings.ContainsRune(id, '%') {
		t.Fatalf("%s is percent-encoded", id)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatalf("parse %s: %v", id, err)
	}
	if u.Path != want || u.EscapedPath() != want || u.RawPath != "" {
		t.Fatalf("%s: path %q (escaped %q), want %q", id, u.Path, u.EscapedPath(), want)
	}
	if c := path.Clean(u.Path); c != u.Path {
		t.Fatalf("%s: path.Clean gives %q, another path", id, c)
	}
	for _, seg := range strings.Split(u.Path[1:], "/") {
		if seg == "" || seg == "." || seg == ".." || strings.Trim(seg, segmentChars) != "" {
			t.Fatalf("%s: segment %q is not a SPIFFE path segment", id, seg)
		}
	}
}

// FuzzValidateSerial: whatever ValidateSerial accepts makes a SPIFFE ID of
// the spec's form that reads back as itself; nothing else is accepted.
func FuzzValidateSerial(f *testing.F) {
	for _, s := range []string{"SN1", "x/../../admin/root", "a%2Fb", "..", ".", "\x00", "SN-\u0410", "a\r\nb", strings.Repeat("z", 65)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if err := pki.ValidateSerial(s); err != nil {
			if !errors.Is(err, pki.ErrBadSerial) {
				t.Fatalf("ValidateSerial(%q) = %v, want ErrBadSerial", s, err)
			}
			return
		}
		if len(s) > 64 || strings.Trim(s, segmentChars) != "" || s == "." || s == ".." {
			t.Fatalf("ValidateSerial accepted %q", s)
		}
		checkSPIFFEPath(t, pki.Identity{Tenant: "t", Serial: s, TrustDomain: "td"}.SPIFFEID().String(), "/t/device/"+s)
	})
}

func TestSPIFFEAndMACURIs(t *testing.T) {
	t.Parallel()
	id := pki.Identity{DeviceID: "d1", Tenant: "acme", Serial: "SN-1.2_x", TrustDomain: "devpki.local"}
	if got, want := id.SPIFFEID().String(), "spiffe://devpki.local/acme/device/SN-1.2_x"; got != want {
		t.Errorf("SPIFFEID = %q, want %q", got, want)
	}
	if got, want := pki.MACURI("aabbccddeeff").String(), "urn:dev:mac:aabbccddeeff"; got != want {
		t.Errorf("MACURI = %q, want %q", got, want)
	}
	u := pki.AdminURI("devpki.local", "acme", "alice.smith_ops-1")
	if got, want := u.String(), "spiffe://devpki.local/acme/admin/alice.smith_ops-1"; got != want {
		t.Errorf("AdminURI = %q, want %q", got, want)
	}
	// A round trip through the string form, as a certificate parser sees it.
	parsed, err := url.Parse(u.String())
	if err != nil {
		t.Fatal(err)
	}
	if tenant, name, ok := pki.ParseAdminURI(parsed, "devpki.local"); !ok || tenant != "acme" || name != "alice.smith_ops-1" {
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
		// SPIFFE forbids percent-encoding, even of allowed characters.
		"spiffe://devpki.local/acme/admin/%61lice",
		"spiffe://devpki.local/acme/admin/a%2Fb",
		"spiffe://devpki.local/acme/admin/%2E%2E",
		"spiffe://devpki.local/acme/%61dmin/alice",
		// Characters outside [A-Za-z0-9._-] and dot segments.
		"spiffe://devpki.local/acme/admin/alice@example.com",
		"spiffe://devpki.local/acme/admin/a:b",
		"spiffe://devpki.local/acme/admin/..",
		"spiffe://devpki.local/acme/admin/.",
		"spiffe://devpki.local/../admin/alice",
		"spiffe://devpki.local/acme/x/../admin/alice",
		"spiffe://devpki.local:443/acme/admin/alice",
		"spiffe://user@devpki.local/acme/admin/alice",
	} {
		u, err := url.Parse(bad)
		if err != nil {
			continue // not even a URL
		}
		if tenant, name, ok := pki.ParseAdminURI(u, "devpki.local"); ok {
			t.Errorf("ParseAdminURI(%q) = %q, %q, true; want false", bad, tenant, name)
		}
	}
	// AdminURI of an invalid name is refused by ParseAdminURI rather than
	// read as another admin.
	for _, name := range []string{"a/b", "..", ".", "", "al ice", "a%2Fb", "alice@example.com", "x/../root"} {
		u := pki.AdminURI("devpki.local", "acme", name)
		if back, err := url.Parse(u.String()); err == nil {
			if tenant, got, ok := pki.ParseAdminURI(back, "devpki.local"); ok {
				t.Errorf("AdminURI(%q) read back as admin %q of %q", name, got, tenant)
			}
		}
	}
}

func TestValidateAdminAndComponentNames(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{"alice", true},
		{"broker-1.eu_west", true},
		{strings.Repeat("a", 64), true},
		{"", false},
		{".", false},
		{"..", false},
		{"alice@example.com", false},
		{"a/b", false},
		{"a b", false},
		{"a%2Fb", false},
		{"a\x00", false},
		{"\u0410lice", false},
	} {
		if err := pki.ValidateAdminName(tt.in); (err == nil) != tt.ok {
			t.Errorf("ValidateAdminName(%q) = %v, want ok=%v", tt.in, err, tt.ok)
		}
		if err := pki.ValidateComponentName(tt.in); (err == nil) != tt.ok {
			t.Errorf("ValidateComponentName(%q) = %v, want ok=%v", tt.in, err, tt.ok)
		}
		u, err := pki.ComponentURI("devpki.local", "acme", tt.in)
		if !tt.ok {
			if err == nil || !errors.Is(err, pki.ErrBadIdentity) || u != nil {
				t.Errorf("ComponentURI(%q) = %v, %v; want ErrBadIdentity", tt.in, u, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("ComponentURI(%q): %v", tt.in, err)
		}
		want := "spiffe://devpki.local/acme/component/" + tt.in
		if u.String() != want {
			t.Errorf("ComponentURI(%q) = %s, want %s", tt.in, u, want)
		}
		checkSPIFFEPath(t, u.String(), "/acme/component/"+tt.in)
	}
	// The admin name is the admin certificate's CN: RFC 5280's 64 at most.
	if err := pki.ValidateAdminName(strings.Repeat("a", 64)); err != nil {
		t.Errorf("64-character admin name: %v", err)
	}
	if err := pki.ValidateAdminName(strings.Repeat("a", 65)); err == nil {
		t.Error("65-character admin name accepted")
	}
	if err := pki.ValidateComponentName(strings.Repeat("a", 65)); err == nil {
		t.Error("65-character component name accepted")
	}
	for _, tt := range []struct{ td, tenant string }{{"Devpki.local", "acme"}, {"devpki.local", "a/b"}, {"devpki.local", ""}, {"", "acme"}} {
		if _, err := pki.ComponentURI(tt.td, tt.tenant, "broker"); !errors.Is(err, pki.ErrBadIdentity) {
			t.Errorf("ComponentURI(%q, %q) = %v, want ErrBadIdentity", tt.td, tt.tenant, err)
		}
	}
}
