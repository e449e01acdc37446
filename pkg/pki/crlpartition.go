package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// Partitioned CRLs (RFC 5280 §5.2.5): a certificate's CRL distribution
// point names one partition of the CA's revocations, <CRL URL>/p/<n>, and
// the CRL served there carries a critical issuing distribution point (IDP)
// with that same URI, so that one revocation re-signs one small CRL.

// Partition bounds.
const (
	// DefaultCRLPartitions is how many partitions new certificates are
	// spread over when nothing else is configured.
	DefaultCRLPartitions = 256
	// MaxCRLPartitions bounds the partition count (and so the numbers a
	// /crl/p/<n> URL may name).
	MaxCRLPartitions = 4096
)

// oidIssuingDistributionPoint is id-ce-issuingDistributionPoint.
var oidIssuingDistributionPoint = asn1.ObjectIdentifier{2, 5, 29, 28}

// ErrBadIDP is wrapped by ParseIDP for an extension that is not a
// well-formed issuing distribution point.
var ErrBadIDP = errors.New("bad issuing distribution point")

// IDP is the issuing distribution point extension of a partition CRL: the
// scope of the CRL. The zero value (no URI) is not encoded.
type IDP struct {
	// URI is the distribution point name, a fullName with one
	// uniformResourceIdentifier: the URL certificates of this scope name in
	// their CRL distribution point.
	URI string
	// OnlyContainsUserCerts: the CRL covers end-entity certificates only
	// (every certificate that names a partition is a leaf).
	OnlyContainsUserCerts bool
}

// IssuingDistributionPoint ::= SEQUENCE {
//
//	distributionPoint          [0] DistributionPointName OPTIONAL,
//	onlyContainsUserCerts      [1] BOOLEAN DEFAULT FALSE,
//	onlyContainsCACerts        [2] BOOLEAN DEFAULT FALSE,
//	onlySomeReasons            [3] ReasonFlags OPTIONAL,
//	indirectCRL                [4] BOOLEAN DEFAULT FALSE,
//	onlyContainsAttributeCerts [5] BOOLEAN DEFAULT FALSE }
//
// DistributionPointName ::= CHOICE { fullName [0] GeneralNames, ... }
//
// The module's tags are implicit, but [0] around a CHOICE is explicit: the
// extension is a0 { a0 { 86 uri } } then 81 01 ff. encoding/asn1 structs
// cannot say "explicit tag around an implicitly tagged SEQUENCE OF", so
// the elements are RawValues, each tagged here.
const (
	idpTagDistributionPoint = 0
	idpTagUserCerts         = 1
	idpTagCACerts           = 2
	idpTagSomeReasons       = 3
	idpTagIndirect          = 4
	idpTagAttrCerts         = 5
	generalNameURI          = 6
)

func ctxTag(tag int, compound bool, body []byte) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: tag, IsCompound: compound, Bytes: body}
}

// Extension encodes the IDP as a critical extension (RFC 5280 §5.2.5: it
// MUST be critical).
func (p IDP) Extension() (pkix.Extension, error) {
	if p.URI == "" || !isASCII(p.URI) {
		return pkix.Extension{}, fmt.Errorf("%w: URI %q must be non-empty printable ASCII", ErrBadIDP, p.URI)
	}
	uri, err := asn1.Marshal(ctxTag(generalNameURI, false, []byte(p.URI)))
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("encode IDP: %w", err)
	}
	fullName, err := asn1.Marshal(ctxTag(0, true, uri))
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("encode IDP: %w", err)
	}
	elems := []asn1.RawValue{ctxTag(idpTagDistributionPoint, true, fullName)}
	if p.OnlyContainsUserCerts {
		elems = append(elems, ctxTag(idpTagUserCerts, false, []byte{0xff}))
	}
	der, err := asn1.Marshal(elems)
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("encode IDP: %w", err)
	}
	return pkix.Extension{Id: oidIssuingDistributionPoint, Critical: true, Value: der}, nil
}

// ParseIDP finds and decodes the issuing distribution point of a CRL. It
// returns nil, nil when the CRL has none (a full CRL), and an error
// wrapping ErrBadIDP when it is malformed, not critical, or scoped in a way
// this package does not issue (CA or attribute certificates only, some
// reasons only, indirect) — a relying party must not use such a CRL as if
// it covered every reason for its certificates.
func ParseIDP(rl *x509.RevocationList) (*IDP, error) {
	for _, ext := range rl.Extensions {
		if !ext.Id.Equal(oidIssuingDistributionPoint) {
			continue
		}
		if !ext.Critical {
			return nil, fmt.Errorf("%w: not critical", ErrBadIDP)
		}
		return parseIDP(ext.Value)
	}
	return nil, nil
}

func parseIDP(der []byte) (*IDP, error) {
	var elems []asn1.RawValue
	if rest, err := asn1.Unmarshal(der, &elems); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("%w: not a SEQUENCE: %v", ErrBadIDP, err)
	}
	p := &IDP{}
	last := -1
	for _, e := range elems {
		if e.Class != asn1.ClassContextSpecific || e.Tag <= last || e.Tag > idpTagAttrCerts {
			return nil, fmt.Errorf("%w: unexpected element [%d]", ErrBadIDP, e.Tag)
		}
		last = e.Tag
		switch e.Tag {
		case idpTagDistributionPoint:
			var name asn1.RawValue
			if rest, err := asn1.Unmarshal(e.Bytes, &name); err != nil || len(rest) != 0 ||
				name.Class != asn1.ClassContextSpecific || name.Tag != 0 || !name.IsCompound {
				return nil, fmt.Errorf("%w: distributionPoint is not a fullName", ErrBadIDP)
			}
			for rest := name.Bytes; len(rest) > 0; {
				var gn asn1.RawValue
				var err error
				if rest, err = asn1.Unmarshal(rest, &gn); err != nil {
					return nil, fmt.Errorf("%w: fullName: %v", ErrBadIDP, err)
				}
				if p.URI == "" && gn.Class == asn1.ClassContextSpecific && gn.Tag == generalNameURI && !gn.IsCompound {
					p.URI = string(gn.Bytes)
				}
			}
		case idpTagSomeReasons:
			return nil, fmt.Errorf("%w: onlySomeReasons", ErrBadIDP)
		default:
			if len(e.Bytes) != 1 || e.IsCompound || (e.Bytes[0] != 0xff && e.Bytes[0] != 0) {
				return nil, fmt.Errorf("%w: element [%d] is not a BOOLEAN", ErrBadIDP, e.Tag)
			}
			if e.Bytes[0] == 0 {
				continue // DER leaves DEFAULT FALSE out; tolerate it
			}
			if e.Tag != idpTagUserCerts {
				return nil, fmt.Errorf("%w: a scope other than user certificates ([%d] TRUE)", ErrBadIDP, e.Tag)
			}
			p.OnlyContainsUserCerts = true
		}
	}
	if p.URI == "" || !isASCII(p.URI) {
		return nil, fmt.Errorf("%w: no URI distribution point name", ErrBadIDP)
	}
	return p, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// CRLPartition is the partition, 1..n, of a certificate serial among n
// partitions: serial mod n, plus one (0 is "no partition": the full CRL).
// Serials are uniformly random, so partitions fill evenly. It returns 0
// when n < 1.
func CRLPartition(serial *big.Int, n int) int {
	if n < 1 || serial == nil {
		return 0
	}
	var m big.Int
	return int(m.Mod(serial, big.NewInt(int64(n))).Int64()) + 1
}

// partitionPath is what a partition's URL adds to the full CRL's URL.
const partitionPath = "/p/"

// CRLPartitionURL is the URL of partition n under the full CRL's URL:
// <crlURL>/p/<n>.
func CRLPartitionURL(crlURL string, n int) string {
	return strings.TrimSuffix(crlURL, "/") + partitionPath + strconv.Itoa(n)
}

// CertCRLPartition returns the partition a certificate's CRL distribution
// point names (a URL ending in /p/<n>, see CRLPartitionURL), or 0 when it
// names none (a certificate issued before partitioning, or without a
// distribution point): the full CRL then covers it. The certificate is
// what says which CRL covers it, so the registry records this.
func CertCRLPartition(c *x509.Certificate) int {
	for _, dp := range c.CRLDistributionPoints {
		i := strings.LastIndex(dp, partitionPath)
		if i < 0 {
			continue
		}
		if p, err := ParseCRLPartition(dp[i+len(partitionPath):]); err == nil {
			return p
		}
	}
	return 0
}

// ParseCRLPartition reads the <n> of a partition URL: a decimal number in
// 1..MaxCRLPartitions, without sign or leading zeros (one URL per
// partition).
func ParseCRLPartition(s string) (int, error) {
	if s == "" || len(s) > 4 || s[0] == '0' {
		return 0, fmt.Errorf("CRL partition %q: want a number from 1 to %d", s, MaxCRLPartitions)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > MaxCRLPartitions || strconv.Itoa(n) != s {
		return 0, fmt.Errorf("CRL partition %q: want a number from 1 to %d", s, MaxCRLPartitions)
	}
	return n, nil
}
