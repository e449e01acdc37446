// Command ca is the devpki certificate authority: it initializes a CA,
// serves the enrollment and admin API, and drives the admin API from the
// command line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
)

const usage = `usage: ca <command> [flags]

commands:
  init --dir DIR [--db DSN]         create a CA (root, intermediate, TLS and admin certificates, ca.yaml); --db: PostgreSQL registry
  serve --config DIR/ca.yaml        serve the CA over HTTPS (--dev: create ./devpki-data and print an enroll command)
  db status | migrate               the registry's schema version and pending migrations; apply them
  token create                      mint a bootstrap token through the admin API
  devices list [--status --serial --mac --tenant]   list devices (pages: --limit, --after)
  devices get ID                    one device and its certificates
  devices revoke ID --reason R      revoke a device and all its certificates
  devices reinstate ID              make a revoked device active again (re-enrolls with a serial-bound token)
  devices rotate ID [--deadline D]  force a re-key at the next renewal (revoke after D)
  devices list --status quarantined  enrollment claims held as possible clones
  devices dismiss QUARANTINE_ID     close a held claim after looking into it (admits no one)
  devices release QUARANTINE_ID [--reason R]   let a held claim's TPM in (RMA, moved TPM); revokes the previous identity
  devices preregister --serial S --mac M --ek-pub F | --csv F   bind TPM EKs to serials (bulk with progress)
  certs list [--device --status --expiring-before --tenant]   list certificates
  certs revoke SERIAL --reason R    revoke one certificate (RFC 5280 reason name or code)
  certs expiring --within 30d [--tenant T]   expiry forecast: per tenant and day, and devices overdue for renewal
  tpm roots add FILE | list         add a TPM manufacturer root (or intermediate) for EK certificates
  idevid roots add FILE [--tenant T] | list   trust a device maker's IDevID CAs (roots, intermediates) for factory enrollment
  issue --csr F --server|--client   certificate for another component (--dns, --ip, --cn)
  audit list [--after N]            read the audit log through the API
  audit verify                      check the audit log's hash chain in the registry database
  audit verify --file F [--root R]  check an export offline (names the first bad line)
  audit export --out F [--since T] [--tenant T] [--local]   export the audit log as JSON lines
  audit prune --before T            delete old events behind a CA-signed checkpoint (--config, on the CA host)
  audit refusals                    anonymous refusals, counted per source, door, reason and minute
  backup --config F --out FILE      consistent, verified backup while the CA serves (registry, ca.yaml, certificates, encrypted keys)
  restore --from FILE --config F | --dir DIR   restore a backup (refuses a registry in use; --force to replace existing files)
  tenants create NAME [policy] | list | set NAME [policy]
                                    manage tenants through the admin API (super-admins); policy: --require-tpm,
                                    --methods token,tpm,idevid, --key-types ecdsa-p256,..., --cert-lifetime D
                                    (--local: in the registry database directly, for bootstrap on the CA host)
  admins add NAME --role R [--tenant T] --out DIR [--csr F]   an admin and its certificate (no --tenant: super-admin)
  admins list | revoke NAME | renew --out DIR                 list, revoke (its certificates too), renew one's own certificate
  rollover prepare [--root] | status [--output json] | activate | retire
                                    roll the issuing CA (super-admins): a new intermediate, or with --root a new root
                                    cross-signed by the current one; adoption per tenant; switch issuance; end the overlap

Admin commands take --config DIR/ca.yaml (its admin certificate), --ca URL, --output json, and
--admin-cert F --admin-key F to act as another admin than the config's.

Run 'ca <command> -h' for the flags of a command.
`

// subcommands of the commands that have several.
var subcommands = map[string]map[string]func(context.Context, []string, io.Writer, io.Writer) error{
	"devices": {
		"list": cmdDevicesList, "get": cmdDevicesGet, "revoke": cmdDevicesRevoke, "rotate": cmdDevicesRotate,
		"reinstate":   cmdDevicesReinstate,
		"preregister": cmdDevicesPreregister, "dismiss": cmdDevicesDismiss, "release": cmdDevicesRelease,
	},
	"certs": {"list": cmdCertsList, "revoke": cmdCertsRevoke, "expiring": cmdCertsExpiring},
	"audit": {"list": cmdAuditList, "verify": cmdAuditVerify, "export": cmdAuditExport, "prune": cmdAuditPrune,
		"refusals": cmdAuditRefusals},
	"tenants": {"create": cmdTenantsCreate, "list": cmdTenantsList, "set": cmdTenantsSet},
	"admins":  {"add": cmdAdminsAdd, "list": cmdAdminsList, "revoke": cmdAdminsRevoke, "renew": cmdAdminsRenew},
	"rollover": {"prepare": cmdRolloverPrepare, "status": cmdRolloverStatus, "activate": cmdRolloverActivate,
		"retire": cmdRolloverRetire},
}

// errUsage marks a command-line mistake (exit code 2).
var errUsage = errors.New("usage error")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "ca:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "ca:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: no command", errUsage)
	}
	switch args[0] {
	case "init":
		return cmdInit(ctx, args[1:], stdout, stderr)
	case "serve":
		return cmdServe(ctx, args[1:], stdout, stderr)
	case "token":
		if len(args) < 2 || args[1] != "create" {
			return fmt.Errorf("%w: 'ca token' takes the subcommand 'create'", errUsage)
		}
		return cmdTokenCreate(ctx, args[2:], stdout, stderr)
	case "certs", "devices", "audit", "tenants", "admins", "rollover":
		cmds := subcommands[args[0]]
		if len(args) < 2 || cmds[args[1]] == nil {
			names := make([]string, 0, len(cmds))
			for n := range cmds {
				names = append(names, n)
			}
			slices.Sort(names)
			return fmt.Errorf("%w: 'ca %s' takes one of the subcommands %s", errUsage, args[0], strings.Join(names, ", "))
		}
		return cmds[args[1]](ctx, args[2:], stdout, stderr)
	case "db":
		return cmdDB(ctx, args[1:], stdout, stderr)
	case "issue":
		return cmdIssue(ctx, args[1:], stdout, stderr)
	case "backup":
		return cmdBackup(ctx, args[1:], stdout, stderr)
	case "restore":
		return cmdRestore(ctx, args[1:], stdout, stderr)
	case "tpm":
		if len(args) < 3 || args[1] != "roots" || (args[2] != "add" && args[2] != "list") {
			return fmt.Errorf("%w: use 'ca tpm roots add FILE' or 'ca tpm roots list'", errUsage)
		}
		if args[2] == "add" {
			return cmdTPMRootsAdd(ctx, args[3:], stdout, stderr)
		}
		return cmdTPMRootsList(ctx, args[3:], stdout, stderr)
	case "idevid":
		if len(args) < 3 || args[1] != "roots" || (args[2] != "add" && args[2] != "list") {
			return fmt.Errorf("%w: use 'ca idevid roots add FILE [--tenant T]' or 'ca idevid roots list'", errUsage)
		}
		if args[2] == "add" {
			return cmdIDevIDRootsAdd(ctx, args[3:], stdout, stderr)
		}
		return cmdIDevIDRootsList(ctx, args[3:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
}

// newFlags returns a FlagSet that reports errors instead of exiting.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("ca "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses and refuses positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}

// listFlag is a repeatable string flag that also splits on commas.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}
