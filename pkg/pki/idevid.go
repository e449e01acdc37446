package pki

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// ErrBadIDevID: a factory IDevID certificate (IEEE 802.1AR) whose hardware
// serial cannot be read: none, two that differ, one outside the serial
// charset, or a subjectAltName that is not well-formed.
var ErrBadIDevID = errors.New("pki: IDevID serial unreadable")

// OIDHardwareModuleName is id-on-hardwareModuleName (RFC 4108 §5), the
// otherName of an IDevID's hardware serial.
var OIDHardwareModuleName = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 8, 4}

// IDevID is what a factory IDevID certificate says of its device.
type IDevID struct {
	// Serial is the hardware serial: the subject's serialNumber or the
	// hardwareModuleName's hwSerialNum (which must agree when both are
	// present, compared case-insensitively).
	Serial string
	// HWType is the hardwareModuleName's hwType; nil without one.
	HWType asn1.ObjectIdentifier
	// Issuer is the issuer's DN (x509 Name.String); CertSerial the
	// certificate's serial number in lowercase hex.
	Issuer, CertSerial string
	// Verifiable is the certificate to verify: the leaf, or a copy of it
	// whose critical subjectAltName, read here, is no longer listed in
	// UnhandledCriticalExtensions.
	Verifiable *x509.Certificate
}

// ParseIDevID reads the hardware serial of an IDevID certificate: its
// subject's serialNumber, or the hwSerialNum of a hardwareModuleName
// otherName (RFC 4108) in its subjectAltName; both present must agree. A
// critical subjectAltName that holds only hardwareModuleName names (which
// Go's x509 leaves in UnhandledCriticalExtensions, so Verify would refuse
// it) is taken out of that list once read, in a copy (IDevID.Verifiable):
// leaf is not changed. Errors wrap ErrBadIDevID.
func ParseIDevID(leaf *x509.Certificate) (*IDevID, error) {
	name := leaf.SerialNumber.Text(16) + "@" + leaf.Issuer.String()
	id := &IDevID{Issuer: leaf.Issuer.String(), CertSerial: leaf.SerialNumber.Text(16), Verifiable: leaf}
	var hmSerial string
	for _, ext := range leaf.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		hwType, serial, onlyHMN, err := parseHardwareModuleName(ext.Value)
		if err != nil {
			return nil, fmt.Errorf("%w: IDevID %s: subjectAltName: %v", ErrBadIDevID, name, err)
		}
		if serial == nil {
			continue
		}
		if err := ValidateSerial(string(serial)); err != nil {
			return nil, fmt.Errorf("%w: IDevID %s: hardwareModuleName serial %q: %v", ErrBadIDevID, name, serial, err)
		}
		hmSerial, id.HWType = string(serial), hwType
		if onlyHMN && ext.Critical {
			i := slices.IndexFunc(leaf.UnhandledCriticalExtensions, func(o asn1.ObjectIdentifier) bool { return o.Equal(oidSubjectAltName) })
			if i >= 0 {
				c := *leaf
				c.UnhandledCriticalExtensions = slices.Delete(slices.Clone(leaf.UnhandledCriticalExtensions), i, i+1)
				id.Verifiable = &c
			}
		}
	}
	subj := leaf.Subject.SerialNumber
	switch {
	case subj != "" && hmSerial != "" && !strings.EqualFold(subj, hmSerial):
		return nil, fmt.Errorf("%w: IDevID %s names two serials: subject serialNumber %q, hardwareModuleName %q",
			ErrBadIDevID, name, subj, hmSerial)
	case hmSerial != "":
		id.Serial = hmSerial
	case subj != "":
		if err := ValidateSerial(subj); err != nil {
			return nil, fmt.Errorf("%w: IDevID %s: subject serialNumber %q: %v", ErrBadIDevID, name, subj, err)
		}
		id.Serial = subj
	default:
		return nil, fmt.Errorf("%w: IDevID %s names no hardware serial (neither a subject serialNumber nor a "+
			"hardwareModuleName subjectAltName)", ErrBadIDevID, name)
	}
	return id, nil
}

// parseHardwareModuleName reads a subjectAltName extension value
// (GeneralNames) and returns the hardwareModuleName it holds (nil serial:
// none), and whether it holds nothing else. Two hardwareModuleNames, or
// bytes that are not GeneralNames, are an error.
//
//	HardwareModuleName ::= SEQUENCE { hwType OBJECT IDENTIFIER, hwSerialNum OCTET STRING }
func parseHardwareModuleName(der []byte) (hwType asn1.ObjectIdentifier, serial []byte, only bool, err error) {
	in := cryptobyte.String(der)
	var names cryptobyte.String
	if !in.ReadASN1(&names, casn1.SEQUENCE) || !in.Empty() {
		return nil, nil, false, errors.New("not a SEQUENCE of GeneralName")
	}
	only = true
	otherName := casn1.Tag(0).ContextSpecific().Constructed()
	for !names.Empty() {
		var gn cryptobyte.String
		var tag casn1.Tag
		if !names.ReadAnyASN1(&gn, &tag) {
			return nil, nil, false, errors.New("malformed GeneralName")
		}
		if tag != otherName {
			only = false
			continue
		}
		var typeID asn1.ObjectIdentifier
		var value cryptobyte.String
		if !gn.ReadASN1ObjectIdentifier(&typeID) || !gn.ReadASN1(&value, casn1.Tag(0).ContextSpecific().Constructed()) || !gn.Empty() {
			return nil, nil, false, errors.New("malformed otherName")
		}
		if !typeID.Equal(OIDHardwareModuleName) {
			only = false
			continue
		}
		var hmn cryptobyte.String
		var t asn1.ObjectIdentifier
		var sn []byte
		if !value.ReadASN1(&hmn, casn1.SEQUENCE) || !value.Empty() ||
			!hmn.ReadASN1ObjectIdentifier(&t) || !hmn.ReadASN1Bytes(&sn, casn1.OCTET_STRING) || !hmn.Empty() {
			return nil, nil, false, errors.New("malformed hardwareModuleName")
		}
		if serial != nil {
			return nil, nil, false, errors.New("two hardwareModuleName entries")
		}
		hwType, serial = t, sn
	}
	return hwType, serial, only, nil
}
