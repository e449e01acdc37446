package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"devpki/api/client"
	"devpki/api/wire"
)

// cmdCertsRevoke is 'ca certs revoke SERIAL --reason R'.
func cmdCertsRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return revokeCommand("certs revoke", "SERIAL", args, stdout, stderr,
		func(c *client.Client, target string, req *wire.RevokeRequest) (*wire.RevokeResponse, error) {
			return c.RevokeCertificate(ctx, target, req)
		})
}

// cmdDevicesRevoke is 'ca devices revoke ID --reason R'.
func cmdDevicesRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return revokeCommand("devices revoke", "DEVICE-ID", args, stdout, stderr,
		func(c *client.Client, target string, req *wire.RevokeRequest) (*wire.RevokeResponse, error) {
			return c.RevokeDevice(ctx, target, req)
		})
}

func revokeCommand(name, what string, args []string, stdout, stderr io.Writer,
	call func(*client.Client, string, *wire.RevokeRequest) (*wire.RevokeResponse, error)) error {
	var af adminFlags
	var req wire.RevokeRequest
	fs := newFlags(name+" "+what, stderr)
	af.register(fs)
	fs.StringVar(&req.Reason, "reason", "unspecified",
		"RFC 5280 reason: unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, "+
			"cessationOfOperation, certificateHold, removeFromCRL, privilegeWithdrawn, aACompromise (or the code)")
	// The target may come before or after the flags.
	var target string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		target, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	switch {
	case target == "" && fs.NArg() == 1:
		target = fs.Arg(0)
	case fs.NArg() > 0:
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(fs.NArg()-1))
	}
	if target == "" {
		return fmt.Errorf("%w: 'ca %s' needs the %s to revoke", errUsage, name, what)
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	resp, err := call(c, target, &req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", name, target, err)
	}
	if af.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(resp)
	}
	subject := "certificate " + resp.Serial
	if resp.DeviceID != "" {
		subject = "device " + resp.DeviceID
	}
	if resp.AlreadyRevoked {
		fmt.Fprintf(stdout, "%s was already revoked; nothing changed\n", subject)
	} else {
		fmt.Fprintf(stdout, "revoked %s: %d certificate(s)\n", subject, len(resp.Certificates))
	}
	for _, rc := range resp.Certificates {
		fmt.Fprintf(stdout, "  %s  %s  %s\n", rc.Serial, rc.Reason, rc.RevokedAt.Format(time.RFC3339))
	}
	if resp.CRLNumber > 0 {
		fmt.Fprintf(stdout, "CRL %d lists it\n", resp.CRLNumber)
	} else if !resp.AlreadyRevoked {
		fmt.Fprintln(stderr, "warning: the CRL was not rebuilt yet; the CA retries on its refresh schedule")
	}
	return nil
}
