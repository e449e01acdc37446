package pki

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// MaxSubjectValueLen is the longest subject attribute value devpki writes,
// in characters: RFC 5280 Appendix A bounds commonName (ub-common-name),
// organizationName (ub-organization-name) and serialNumber
// (ub-serial-number) at 64.
const MaxSubjectValueLen = 64

// ValidateSubjectValue checks a value for a certificate's subject (CN, O or
// serialNumber): 1 to MaxSubjectValueLen characters of valid UTF-8, no
// control characters, no leading or trailing white space. The issuer refuses
// anything else; zlint's e_subject_common_name_max_length,
// e_subject_dn_not_printable_characters and w_subject_dn_*_whitespace flag
// it.
func ValidateSubjectValue(s string) error {
	n := utf8.RuneCountInString(s)
	switch {
	case !utf8.ValidString(s):
		return fmt.Errorf("subject value %q is not valid UTF-8", s)
	case n == 0 || n > MaxSubjectValueLen:
		return fmt.Errorf("subject value %s must be 1 to %d characters, got %d", clip(s), MaxSubjectValueLen, n)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return fmt.Errorf("subject value %q holds a control character", s)
	case strings.TrimSpace(s) != s:
		return fmt.Errorf("subject value %q begins or ends with white space", s)
	}
	return nil
}

// dnsProfile is IDNA lookup (UTS #46 mapping, STD3 rules: letters, digits
// and hyphens only; hyphen and Bidi checks), as x509util.SanitizeName uses,
// plus the RFC 1035 lengths RFC 5280 §4.2.1.6 asks of a dNSName: labels of
// 1 to 63 octets, the name at most 253.
var dnsProfile = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.VerifyDNSLength(true))

// ValidateDNSName checks a DNS name for a certificate's SAN: a host name in
// its ASCII form (A-labels for internationalized names; letters in either
// case), labels of 1 to 63 letters, digits and hyphens not beginning or
// ending with a hyphen, at most 253 octets, no trailing dot and no wildcard.
func ValidateDNSName(d string) error {
	a, err := dnsProfile.ToASCII(d)
	switch {
	case err != nil:
		return fmt.Errorf("DNS name %s: %v", clip(d), err)
	case strings.HasSuffix(d, "."):
		return fmt.Errorf("DNS name %q ends with a dot", d)
	case strings.IndexFunc(d, func(r rune) bool { return r >= utf8.RuneSelf }) >= 0:
		return fmt.Errorf("DNS name %q must be written in ASCII (%q)", d, a)
	case a != strings.ToLower(d):
		// Lookup mapped an ASCII name to another (it should not): refuse
		// rather than certify a name other than the one asked for.
		return fmt.Errorf("DNS name %q is not in its canonical form %q", d, a)
	}
	return nil
}
