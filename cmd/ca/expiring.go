package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"text/tabwriter"

	"devpki/api/wire"
	"devpki/pkg/provision"
)

// cmdCertsExpiring is 'ca certs expiring --within 30d [--tenant T] [--limit N]':
// the expiry forecast over the admin API.
func cmdCertsExpiring(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	fs := newFlags("certs expiring", stderr)
	af.register(fs)
	within := fs.String("within", "30d", "forecast window from now: days (30d) or a duration (72h), at most 366d")
	tenant := fs.String("tenant", "", "only this tenant (default: yours; a super-admin's: every tenant)")
	limit := fs.Int("limit", 100, "devices listed as overdue for renewal (1-1000)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	d, err := provision.ParseWithin(*within)
	if err != nil {
		return fmt.Errorf("%w: --within: %v", errUsage, err)
	}
	if *limit < 1 || *limit > 1000 {
		return fmt.Errorf("%w: --limit %d is not from 1 to 1000", errUsage, *limit)
	}
	q := url.Values{"within": {d.String()}, "limit": {strconv.Itoa(*limit)}}
	if *tenant != "" {
		q.Set("tenant", *tenant)
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	fc, err := c.ExpiryForecast(ctx, q)
	if err != nil {
		return fmt.Errorf("expiry forecast: %w", err)
	}
	if af.output == "json" {
		return printJSON(stdout, fc)
	}
	return printForecast(stdout, fc)
}

// printForecast is the human form of a forecast: totals per tenant, counts
// per day, then the devices that will miss their renewal window.
func printForecast(w io.Writer, fc *wire.ExpiryForecast) error {
	fmt.Fprintf(w, "%d device certificates expire between %s and %s\n", fc.Total, fmtTime(fc.From), fmtTime(fc.To))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(fc.Tenants) > 0 {
		fmt.Fprintln(tw, "\nTENANT\tEXPIRING")
		for _, t := range fc.Tenants {
			fmt.Fprintf(tw, "%s\t%d\n", t.Tenant, t.Total)
		}
		fmt.Fprintln(tw, "\nDAY (UTC)\tTENANT\tEXPIRING")
		for _, t := range fc.Tenants {
			for _, d := range t.Days {
				fmt.Fprintf(tw, "%s\t%s\t%d\n", d.Day, t.Tenant, d.Count)
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if fc.OverdueTotal == 0 {
		fmt.Fprintln(w, "\nNo device is overdue: every one whose renewal window has opened renewed since.")
		return nil
	}
	fmt.Fprintf(w, "\n%d devices will miss their renewal window: it opened (RENEW AFTER) and the CA has not seen them since (LAST SEEN)",
		fc.OverdueTotal)
	if int64(len(fc.Overdue)) < fc.OverdueTotal {
		fmt.Fprintf(w, "; the %d expiring first", len(fc.Overdue))
	}
	fmt.Fprintln(w, ":")
	fmt.Fprintln(tw, "DEVICE\tSERIAL\tTENANT\tLAST SEEN\tRENEW AFTER\tEXPIRES")
	for _, o := range fc.Overdue {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", o.DeviceID, o.Serial, o.Tenant, fmtTime(o.LastSeen), fmtTime(o.RenewAfter), fmtTime(o.NotAfter))
	}
	return tw.Flush()
}
