package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
)

// defaultSerialPaths are read in order for the hardware serial number.
var defaultSerialPaths = []string{
	"/sys/class/dmi/id/product_serial", // x86 SMBIOS (readable by root only)
	"/proc/device-tree/serial-number",  // ARM boards (Raspberry Pi and the like)
}

// placeholderSerials are values firmware writes when no serial was set.
var placeholderSerials = map[string]bool{
	"to be filled by o.e.m.": true,
	"default string":         true,
	"none":                   true,
	"not specified":          true,
	"not applicable":         true,
	"system serial number":   true,
	"n/a":                    true,
	"na":                     true,
	"unknown":                true,
	"0123456789":             true,
	"123456789":              true,
}

// discovery says where to look for the serial and the MAC address. The zero
// value reads defaultSerialPaths and net.Interfaces.
type discovery struct {
	SerialPaths []string
	Interfaces  func() ([]net.Interface, error)
}

// Serial returns the first usable serial number in d.SerialPaths. The error
// names every path tried and why it was not used.
func (d discovery) Serial() (string, error) {
	paths := d.SerialPaths
	if paths == nil {
		paths = defaultSerialPaths
	}
	var tried []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", p, unwrapPathErr(err)))
			continue
		}
		s := cleanSerial(string(b))
		switch {
		case s == "":
			tried = append(tried, p+": empty")
		case isPlaceholder(s):
			tried = append(tried, fmt.Sprintf("%s: placeholder %q", p, s))
		default:
			return s, nil
		}
	}
	return "", fmt.Errorf("cannot discover the device serial number (tried %s); pass --serial", strings.Join(tried, "; "))
}

// MAC returns the hardware address of the first interface, by index, that is
// not a loopback and has a non-zero 48-bit address.
func (d discovery) MAC() (string, error) {
	list := d.Interfaces
	if list == nil {
		list = net.Interfaces
	}
	ifs, err := list()
	if err != nil {
		return "", fmt.Errorf("cannot discover a MAC address: list network interfaces: %v; pass --mac", err)
	}
	sort.Slice(ifs, func(i, j int) bool { return ifs[i].Index < ifs[j].Index })
	var tried []string
	for _, ifc := range ifs {
		switch {
		case ifc.Flags&net.FlagLoopback != 0:
			tried = append(tried, ifc.Name+": loopback")
		case len(ifc.HardwareAddr) != 6:
			tried = append(tried, ifc.Name+": no 48-bit hardware address")
		case isZero(ifc.HardwareAddr):
			tried = append(tried, ifc.Name+": all-zero address")
		default:
			return ifc.HardwareAddr.String(), nil
		}
	}
	if len(tried) == 0 {
		tried = append(tried, "no network interfaces")
	}
	return "", fmt.Errorf("cannot discover a MAC address (tried %s); pass --mac", strings.Join(tried, "; "))
}

func cleanSerial(s string) string {
	return strings.TrimSpace(strings.ReplaceAll(s, "\x00", ""))
}

func isPlaceholder(s string) bool {
	if placeholderSerials[strings.ToLower(s)] {
		return true
	}
	// "0", "00000000" and the like.
	return strings.Trim(s, "0") == ""
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
