package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"devpki/api/wire"
)

// cmdRolloverPrepare is 'ca rollover prepare [--root]'.
func cmdRolloverPrepare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	fs := newFlags("rollover prepare", stderr)
	af.register(fs)
	root := fs.Bool("root", false, "make a new root too, cross-signed by the current root (devices that trust only the current root accept it)")
	if _, err := parseWithTarget(fs, args, ""); err != nil {
		return err
	}
	output := &af.output
	c, err := af.client()
	if err != nil {
		return err
	}
	res, err := c.RolloverPrepare(ctx, *root)
	if err != nil {
		return err
	}
	if *output == "json" {
		return printJSON(stdout, res)
	}
	printIssuerStep(stdout, "prepared", res)
	fmt.Fprintln(stdout, "The trust bundle (/v1/ca/roots) now names it; devices fetch it at their next renewal.")
	fmt.Fprintln(stdout, "Watch adoption with 'ca rollover status', then run 'ca rollover activate'.")
	return nil
}

// cmdRolloverActivate is 'ca rollover activate'.
func cmdRolloverActivate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return rolloverStep(ctx, args, stdout, stderr, "activate", "active",
		"New certificates now come from this issuer; the previous one stays trusted. End the overlap with 'ca rollover retire'.")
}

// cmdRolloverRetire is 'ca rollover retire'.
func cmdRolloverRetire(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return rolloverStep(ctx, args, stdout, stderr, "retire", "retired",
		"It signs no certificate any more; its CRL and OCSP answers go on until its certificate expires.")
}

func rolloverStep(ctx context.Context, args []string, stdout, stderr io.Writer, step, done, next string) error {
	var af adminFlags
	fs := newFlags("rollover "+step, stderr)
	af.register(fs)
	if _, err := parseWithTarget(fs, args, ""); err != nil {
		return err
	}
	output := &af.output
	c, err := af.client()
	if err != nil {
		return err
	}
	var res *wire.RolloverStepResponse
	if step == "activate" {
		res, err = c.RolloverActivate(ctx)
	} else {
		res, err = c.RolloverRetire(ctx)
	}
	if err != nil {
		return err
	}
	if *output == "json" {
		return printJSON(stdout, res)
	}
	printIssuerStep(stdout, done, res)
	fmt.Fprintln(stdout, next)
	return nil
}

func printIssuerStep(w io.Writer, done string, res *wire.RolloverStepResponse) {
	i := res.Issuer
	fmt.Fprintf(w, "issuer %s %s: %s (root %s, until %s)\n", i.KeyID, done, i.Subject, i.RootFingerprint, fmtTime(i.NotAfter))
	if i.CrossSigned {
		fmt.Fprintln(w, "new root, cross-signed by the previous root")
	}
	if res.Previous != nil {
		fmt.Fprintf(w, "previous issuer %s is now in its overlap\n", res.Previous.KeyID)
	}
	for _, f := range res.Files {
		fmt.Fprintf(w, "wrote %s\n", f)
	}
}

// cmdRolloverStatus is 'ca rollover status [--output json]'.
func cmdRolloverStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	fs := newFlags("rollover status", stderr)
	af.register(fs)
	if _, err := parseWithTarget(fs, args, ""); err != nil {
		return err
	}
	output := &af.output
	c, err := af.client()
	if err != nil {
		return err
	}
	st, err := c.RolloverStatus(ctx)
	if err != nil {
		return err
	}
	if *output == "json" {
		return printJSON(stdout, st)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ISSUER\tSTATE\tKIND\tROOT\tNOT AFTER")
	for _, i := range st.Issuers {
		kind := i.Kind
		if kind == "" {
			kind = "initial"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", i.KeyID, i.State, kind, i.RootFingerprint[:16], fmtTime(i.NotAfter))
	}
	tw.Flush()
	fmt.Fprintf(stdout, "\nadoption of issuer %s:\n", st.Target)
	tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tDEVICES\tON NEW ISSUER\tFETCHED BUNDLE")
	for _, t := range st.Tenants {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", t.Tenant, t.Devices, t.OnNewIssuer, t.FetchedBundle)
	}
	return tw.Flush()
}
