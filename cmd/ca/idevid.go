package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"devpki/api/wire"
)

// idevidAddHelp explains 'ca idevid roots add'.
const idevidAddHelp = `usage: ca idevid roots add FILE [--tenant T] [--config DIR/ca.yaml] [--ca URL] [--output json]

Trusts a device manufacturer's CA for factory IDevID enrollment (IEEE
802.1AR) in a tenant: devices whose IDevID chains to it enroll without a
bootstrap token ('enroll --idevid-cert F --idevid-key F'), into that tenant,
with the serial their IDevID carries. FILE holds one or more PEM
certificates: each self-signed one is kept as a root (a trust anchor), any
other as an intermediate (it completes the chain of a device that sends only
its leaf). A certificate the tenant trusts already is reported and left as
it is. Every replica sees it at once, no restart. Role admin; audited as
idevid.ca.add.

flags:
`

// cmdIDevIDRootsAdd is 'ca idevid roots add FILE [--tenant T]'.
func cmdIDevIDRootsAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	var tenant string
	fs := newFlags("idevid roots add FILE", stderr)
	af.register(fs)
	fs.StringVar(&tenant, "tenant", "", "tenant whose devices the manufacturer's IDevIDs admit (default: your own)")
	fs.Usage = func() {
		fmt.Fprint(stderr, idevidAddHelp)
		fs.PrintDefaults()
	}
	file, err := parseWithTarget(fs, args, "certificate file")
	if err != nil {
		return err
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	out, err := c.AddIDevIDRoot(ctx, &wire.AddIDevIDRootRequest{PEM: string(b), Tenant: tenant})
	if err != nil {
		return fmt.Errorf("add IDevID CA: %w", err)
	}
	if af.output == "json" {
		return printJSON(stdout, out)
	}
	for _, r := range out {
		verb := "trusting"
		if !r.Added {
			verb = "already trusted:"
		}
		fmt.Fprintf(stdout, "%s IDevID %s %s (%s) in tenant %s\n", verb, r.Kind, r.Subject, r.Fingerprint, r.Tenant)
	}
	return nil
}

// cmdIDevIDRootsList is 'ca idevid roots list [--tenant T]'.
func cmdIDevIDRootsList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	var tenant string
	fs := newFlags("idevid roots list", stderr)
	af.register(fs)
	fs.StringVar(&tenant, "tenant", "", "tenant (default: your own)")
	if _, err := parseWithTarget(fs, args, ""); err != nil {
		return err
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	roots, err := c.ListIDevIDRoots(ctx, tenant)
	if err != nil {
		return fmt.Errorf("list IDevID CAs: %w", err)
	}
	if af.output == "json" {
		return printJSON(stdout, roots)
	}
	for _, r := range roots {
		fmt.Fprintf(stdout, "%s  %-12s  %s  tenant %s  added %s by %s\n", r.Fingerprint, r.Kind, r.Subject, r.Tenant,
			fmtTime(r.CreatedAt), r.AddedBy)
	}
	return nil
}
