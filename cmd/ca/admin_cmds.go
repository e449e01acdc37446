package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"devpki/api/client"
	"devpki/api/wire"
	"devpki/pkg/atomicfile"
	"devpki/pkg/pki"
)

// parseWithTarget parses flags that may stand before or after one positional
// target (a device id, a serial). An empty what means no target is taken.
func parseWithTarget(fs *flag.FlagSet, args []string, what string) (string, error) {
	var target string
	if what != "" && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		target, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", err
		}
		return "", fmt.Errorf("%w: %v", errUsage, err)
	}
	switch {
	case what != "" && target == "" && fs.NArg() == 1:
		target = fs.Arg(0)
	case fs.NArg() > 0:
		return "", fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(fs.NArg()-1))
	}
	if what != "" && target == "" {
		return "", fmt.Errorf("%w: the %s is required", errUsage, what)
	}
	return target, nil
}

// printJSON writes v indented, for --output json.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// cmdDevicesList is 'ca devices list [--status S [--all]] [--serial S] [--mac M] [--limit N] [--after ID]'.
func cmdDevicesList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	fs := newFlags("devices list", stderr)
	af.register(fs)
	status := fs.String("status", "", "active, revoked or quarantined (quarantined: enrollment claims held for an admin as possible clones)")
	serial := fs.String("serial", "", "hardware serial")
	mac := fs.String("mac", "", "MAC address")
	limit := fs.Int("limit", 100, "page size (1-1000)")
	after := fs.String("after", "", "list after this device id (the 'next' of the previous page)")
	all := fs.Bool("all", false, "with --status quarantined: also the claims already dismissed or released")
	tenant := fs.String("tenant", "", "the tenant to list (a super-admin's choice; default: the admin's own)")
	if _, err := parseWithTarget(fs, args, ""); err != nil {
		return err
	}
	if *all && *status != "quarantined" {
		return fmt.Errorf("%w: --all applies to --status quarantined only", errUsage)
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	q := url.Values{"limit": {strconv.Itoa(*limit)}}
	for k, v := range map[string]string{"status": *status, "serial": *serial, "mac": *mac, "after": *after, "tenant": *tenant} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if *all {
		q.Set("all", "true")
	}
	if *status == "quarantined" {
		return listQuarantined(ctx, c, q, af.output, stdout, stderr)
	}
	l, err := c.ListDevices(ctx, q)
	if err != nil {
		return fmt.Errorf("list devices: %w", err)
	}
	if af.output == "json" {
		return printJSON(stdout, l)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSERIAL\tSTATUS\tMETHOD\tMACS\tREKEY\tUPDATED")
	for _, d := range l.Devices {
		rekey := ""
		if d.RekeyRequired {
			rekey = "required"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.Serial, d.Status, d.Method, strings.Join(d.MACs, ","), rekey, fmtTime(d.UpdatedAt))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if l.Next != "" {
		fmt.Fprintf(stderr, "more: --after %s\n", l.Next)
	}
	return nil
}

// listQuarantined prints the claims held as possible clones (with all=true
// in q, also those closed), each with its status.
func listQuarantined(ctx context.Context, c *client.Client, q url.Values, output string, stdout, stderr io.Writer) error {
	l, err := c.ListQuarantined(ctx, q)
	if err != nil {
		return fmt.Errorf("list quarantined claims: %w", err)
	}
	if output == "json" {
		return printJSON(stdout, l)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tSERIAL\tMACS\tREASON\tCONFLICTS WITH\tCOUNT\tFIRST SEEN\tLAST SEEN\tEK HASH / IDEVID")
	for _, h := range l.Quarantined {
		conflict := h.ConflictDeviceID
		if conflict == "" {
			conflict = "-"
		}
		claimant := h.EKHash
		if h.IDevID != "" {
			claimant = "idevid " + h.IDevID
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", h.ID, h.Status, h.Serial, strings.Join(h.MACs, ","), h.Reason,
			conflict, h.Attempts, fmtTime(h.FirstSeen), fmtTime(h.LastSeen), claimant)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if l.Next != "" {
		fmt.Fprintf(stderr, "more: --after %s\n", l.Next)
	}
	return nil
}

// dismissHelp explains 'ca devices dismiss'.
const dismissHelp = `usage: ca devices dismiss QUARANTINE_ID [--config DIR/ca.yaml] [--ca URL] [--output json]

Closes a claim the CA holds as a possible clone (listed by 'ca devices list
--status quarantined'): your answer once you have looked into it and found
that the claimant should not get in. Dismissing changes no device and
admits no one: the claimant stays refused, and a new claim from it is held
again as a new record. Role admin; audited as quarantine.dismiss.

A held claim means a TPM asked for a serial enrolled with another TPM (reason
serial-has-other-ek), or an enrolled TPM asked for another serial
(ek-has-other-serial). If the enrolled device is the impostor or is
compromised, revoke it with 'ca devices revoke DEVICE_ID --reason
keyCompromise'. Revoking does not hand its serial or its TPM over to the
claimant: they stay bound to the revoked device, and the claimant stays
refused. If the claim is a legitimate hardware change (a TPM or mainboard
replaced, a TPM moved to another chassis), let the device in with
'ca devices release QUARANTINE_ID' instead.

flags:
`

// cmdDevicesDismiss is 'ca devices dismiss QUARANTINE_ID'.
func cmdDevicesDismiss(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	fs := newFlags("devices dismiss QUARANTINE_ID", stderr)
	af.register(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, dismissHelp)
		fs.PrintDefaults()
	}
	id, err := parseWithTarget(fs, args, "quarantine id")
	if err != nil {
		return err
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	h, err := c.DismissQuarantined(ctx, id)
	if err != nil {
		return fmt.Errorf("dismiss %s: %w", id, err)
	}
	if af.output == "json" {
		return printJSON(stdout, h)
	}
	fmt.Fprintf(stdout, "claim %s (serial %s, EK %s, %s, %d attempts) dismissed by %s; the claimant stays refused\n",
		h.ID, h.Serial, h.EKHash, h.Reason, h.Attempts, h.DismissedBy)
	return nil
}

// releaseHelp explains 'ca devices release'.
const releaseHelp = `usage: ca devices release QUARANTINE_ID [--reason R] [--config DIR/ca.yaml] [--ca URL] [--output json]

Lets in the device with the TPM of a claim held as a possible clone (listed
by 'ca devices list --status quarantined'), once you have checked that the
claim is a legitimate hardware change; the previous identity is revoked.
Role admin; audited as quarantine.release. The device is not contacted: its
next enrollment attempt succeeds.

  serial-has-other-ek  the chassis got a new TPM or mainboard (RMA): the
                       enrolled device with that serial is bound to the new
                       TPM and keeps its device id; its certificates are
                       revoked.
  ek-has-other-serial  the TPM moved to another chassis: the enrolled device
                       with that TPM is revoked (device and certificates) and
                       the TPM freed; it enrolls as a new device with the
                       new serial.
  serial-has-other-idevid  another factory IDevID (a replaced board), or an
                       IDevID for a serial enrolled without one: the enrolled
                       device is bound to the claimant's IDevID and keeps its
                       device id; its certificates are revoked.

Certificates are revoked with --reason (default superseded; keyCompromise if
the old hardware may be in the wrong hands), and the CRL lists them before
the command returns. A claim already closed, or whose enrolled device
changed since it was held, is refused with nothing changed. To refuse the
claimant instead, use 'ca devices dismiss QUARANTINE_ID'.

flags:
`

// cmdDevicesRelease is 'ca devices release QUARANTINE_ID [--reason R]'.
func cmdDevicesRelease(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	var req wire.ReleaseRequest
	fs := newFlags("devices release QUARANTINE_ID", stderr)
	af.register(fs)
	fs.StringVar(&req.Reason, "reason", "superseded",
		"RFC 5280 reason of the certificates revoked: superseded, keyCompromise, affiliationChanged, cessationOfOperation, ... (or the code)")
	fs.Usage = func() {
		fmt.Fprint(stderr, releaseHelp)
		fs.PrintDefaults()
	}
	id, err := parseWithTarget(fs, args, "quarantine id")
	if err != nil {
		return err
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	res, err := c.ReleaseQuarantined(ctx, id, &req)
	if err != nil {
		return fmt.Errorf("release %s: %w", id, err)
	}
	if af.output == "json" {
		return printJSON(stdout, res)
	}
	h, d := res.Claim, res.Device
	fmt.Fprintf(stdout, "claim %s released by %s\n", h.ID, h.ReleasedBy)
	switch h.Reason {
	case "serial-has-other-idevid":
		fmt.Fprintf(stdout, "device %s (serial %s) is now bound to the claimant's IDevID %s and keeps its id; it enrolls at its next attempt\n",
			d.ID, d.Serial, h.IDevID)
	case "ek-has-other-serial":
		fmt.Fprintf(stdout, "device %s (serial %s) revoked and its TPM freed; the TPM (EK %s) enrolls as serial %s, a new device, at its next attempt\n",
			d.ID, d.Serial, h.EKHash, h.Serial)
	default:
		fmt.Fprintf(stdout, "device %s (serial %s) is now bound to the claimant's TPM (EK %s) and keeps its id; it enrolls at its next attempt\n",
			d.ID, d.Serial, h.EKHash)
	}
	fmt.Fprintf(stdout, "revoked %d certificate(s) of device %s\n", len(res.Certificates), d.ID)
	for _, rc := range res.Certificates {
		fmt.Fprintf(stdout, "  %s  %s  %s\n", rc.Serial, rc.Reason, rc.RevokedAt.Format(time.RFC3339))
	}
	switch {
	case res.CRLNumber > 0:
		fmt.Fprintf(stdout, "CRL %d lists them\n", res.CRLNumber)
	case len(res.Certificates) > 0:
		fmt.Fprintln(stderr, "warning: the CRL was not rebuilt yet; the CA retries on its refresh schedule")
	}
	return nil
}

// cmdDevicesGet is 'ca devices get ID'.
func cmdDevicesGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	fs := newFlags("devices get ID", stderr)
	af.register(fs)
	id, err := parseWithTarget(fs, args, "device id")
	if err != nil {
		return err
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	d, err := c.GetDevice(ctx, id)
	if err != nil {
		return fmt.Errorf("get device: %w", err)
	}
	if af.output == "json" {
		return printJSON(stdout, d)
	}
	certs, err := c.ListCertificates(ctx, url.Values{"device": {id}})
	if err != nil {
		return fmt.Errorf("list certificates: %w", err)
	}
	fmt.Fprintf(stdout, "device:   %s\ntenant:   %s\nserial:   %s\nmacs:     %s\nstatus:   %s\nmethod:   %s\ncreated:  %s\n",
		d.ID, d.Tenant, d.Serial, strings.Join(d.MACs, ","), d.Status, d.Method, fmtTime(d.CreatedAt))
	if d.IDevIDSerial != "" {
		fmt.Fprintf(stdout, "idevid:   serial %s issued by %s\n", d.IDevIDSerial, d.IDevIDIssuer)
	}
	if d.RekeyRequired {
		fmt.Fprintf(stdout, "re-key:   required")
		if d.RekeyDeadline != nil {
			fmt.Fprintf(stdout, " by %s", fmtTime(*d.RekeyDeadline))
		}
		fmt.Fprintln(stdout)
	}
	for _, ct := range certs.Certificates {
		fmt.Fprintf(stdout, "cert:     %s %s until %s\n", ct.Serial, ct.Status, fmtTime(ct.NotAfter))
	}
	return nil
}

// cmdDevicesRotate is 'ca devices rotate ID [--deadline 72h|RFC3339]'.
func cmdDevicesRotate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	fs := newFlags("devices rotate ID", stderr)
	af.register(fs)
	deadline := fs.String("deadline", "", "revoke the device's certificates if it has not re-keyed by then (a duration such as 72h, or an RFC 3339 time)")
	id, err := parseWithTarget(fs, args, "device id")
	if err != nil {
		return err
	}
	var req wire.RotateRequest
	if *deadline != "" {
		t, err := parseDeadline(*deadline, time.Now())
		if err != nil {
			return fmt.Errorf("%w: --deadline: %v", errUsage, err)
		}
		req.Deadline = &t
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	d, err := c.RotateDevice(ctx, id, &req)
	if err != nil {
		return fmt.Errorf("rotate device: %w", err)
	}
	if af.output == "json" {
		return printJSON(stdout, d)
	}
	fmt.Fprintf(stdout, "device %s must re-key at its next renewal", d.ID)
	if d.RekeyDeadline != nil {
		fmt.Fprintf(stdout, "; its certificates are revoked if it has not by %s", fmtTime(*d.RekeyDeadline))
	}
	fmt.Fprintln(stdout)
	return nil
}

// cmdDevicesReinstate is 'ca devices reinstate ID': a revoked device
// becomes active again, its certificates staying revoked, so that a token
// bound to its serial (or its TPM's attestation) re-enrolls it.
func cmdDevicesReinstate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	fs := newFlags("devices reinstate ID", stderr)
	af.register(fs)
	id, err := parseWithTarget(fs, args, "device id")
	if err != nil {
		return err
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	d, err := c.ReinstateDevice(ctx, id)
	if err != nil {
		return fmt.Errorf("reinstate device %s: %w", id, err)
	}
	if af.output == "json" {
		return printJSON(stdout, d)
	}
	fmt.Fprintf(stdout, "device %s (serial %s) is %s again; its certificates stay revoked: "+
		"enroll it with a token bound to serial %s ('ca token create --serial %s'), or its TPM's attestation\n",
		d.ID, d.Serial, d.Status, d.Serial, d.Serial)
	return nil
}

func parseDeadline(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("%s is not in the future", s)
		}
		return now.Add(d).UTC().Truncate(time.Second), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration (72h) nor an RFC 3339 time", s)
	}
	return t, nil
}

// cmdCertsList is 'ca certs list [--device ID] [--kind K] [--status S] [--expiring-before 240h|RFC3339]'.
func cmdCertsList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	fs := newFlags("certs list", stderr)
	af.register(fs)
	device := fs.String("device", "", "device id")
	kind := fs.String("kind", "", "device, admin, server or client")
	status := fs.String("status", "", "active, superseded or revoked")
	expiring := fs.String("expiring-before", "", "only certificates that expire before this (a duration from now such as 240h, or an RFC 3339 time)")
	limit := fs.Int("limit", 100, "page size (1-1000)")
	after := fs.String("after", "", "list after this cursor: the 'next' of the previous page (not-after/serial: certificates are listed soonest-expiring first)")
	tenant := fs.String("tenant", "", "the tenant to list (a super-admin's choice; default: the admin's own)")
	if _, err := parseWithTarget(fs, args, ""); err != nil {
		return err
	}
	q := url.Values{"limit": {strconv.Itoa(*limit)}}
	for k, v := range map[string]string{"device": *device, "kind": *kind, "status": *status, "after": *after, "tenant": *tenant} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if *expiring != "" {
		t, err := parseDeadline(*expiring, time.Now())
		if err != nil {
			return fmt.Errorf("%w: --expiring-before: %v", errUsage, err)
		}
		q.Set("expiring_before", t.Format(time.RFC3339))
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	l, err := c.ListCertificates(ctx, q)
	if err != nil {
		return fmt.Errorf("list certificates: %w", err)
	}
	if af.output == "json" {
		return printJSON(stdout, l)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERIAL\tKIND\tSTATUS\tDEVICE\tNOT AFTER\tSUBJECT")
	for _, ct := range l.Certificates {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", ct.Serial, ct.Kind, ct.Status, ct.DeviceID, fmtTime(ct.NotAfter), ct.Subject)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if l.Next != "" {
		fmt.Fprintf(stderr, "more: --after %s\n", l.Next)
	}
	return nil
}

// cmdIssue is 'ca issue --csr F (--server|--client) [--dns N]... [--ip A]... [--cn N] [--lifetime D] [--out F]'.
func cmdIssue(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	var dns, ips listFlag
	fs := newFlags("issue", stderr)
	af.register(fs)
	csrFile := fs.String("csr", "", "PEM certificate request of the component (only its key is used)")
	server := fs.Bool("server", false, "a server certificate (serverAuth and clientAuth)")
	clientCert := fs.Bool("client", false, "a client certificate (clientAuth)")
	fs.Var(&dns, "dns", "DNS name (repeatable; server certificates)")
	fs.Var(&ips, "ip", "IP address (repeatable; server certificates)")
	cn := fs.String("cn", "", "common name (required for client certificates)")
	lifetime := fs.Duration("lifetime", pki.DefaultLeafLifetime, "validity")
	out := fs.String("out", "", "write the certificate and chain to this file instead of stdout")
	if _, err := parseWithTarget(fs, args, ""); err != nil {
		return err
	}
	if *server == *clientCert {
		return fmt.Errorf("%w: pass exactly one of --server and --client", errUsage)
	}
	if *csrFile == "" {
		return fmt.Errorf("%w: --csr FILE is required", errUsage)
	}
	csr, err := os.ReadFile(*csrFile)
	if err != nil {
		return fmt.Errorf("%w: --csr: %v", errUsage, err)
	}
	req := &wire.IssueRequest{CSR: string(csr), Usage: "client", CommonName: *cn, DNSNames: dns, IPs: ips, Lifetime: lifetime.String()}
	if *server {
		req.Usage = "server"
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	res, err := c.Issue(ctx, req)
	if err != nil {
		return fmt.Errorf("issue: %w", err)
	}
	if af.output == "json" {
		return printJSON(stdout, res)
	}
	bundle := res.Certificate + strings.Join(res.Chain, "")
	if *out != "" {
		if err := atomicfile.Write(*out, []byte(bundle), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "wrote %s\n", *out)
		return nil
	}
	_, err = io.WriteString(stdout, bundle)
	return err
}

// cmdAuditList is 'ca audit list [--after SEQ] [--limit N]'.
func cmdAuditList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	fs := newFlags("audit list", stderr)
	af.register(fs)
	after := fs.Int64("after", 0, "list events after this sequence number")
	limit := fs.Int("limit", 100, "page size (1-1000)")
	if _, err := parseWithTarget(fs, args, ""); err != nil {
		return err
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	l, err := c.ListAudit(ctx, *after, *limit)
	if err != nil {
		return fmt.Errorf("list audit events: %w", err)
	}
	if af.output == "json" {
		return printJSON(stdout, l)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tACTOR\tACTION\tTARGET\tRESULT\tDETAIL")
	for _, ev := range l.Events {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.Seq, fmtTime(ev.Time), ev.Actor, ev.Action, ev.Target, ev.Result, ev.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if l.Next != 0 {
		fmt.Fprintf(stderr, "more: --after %d\n", l.Next)
	}
	return nil
}
