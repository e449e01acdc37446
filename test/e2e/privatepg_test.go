package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// privatePG is a PostgreSQL server of this test alone, on a Unix socket
// in a temporary directory, so the test may stop and start it.
type privatePG struct {
	bin, data, sock, log string
	asPostgres           bool
}

// startPrivatePG initdbs and starts a private PostgreSQL (as the user
// postgres when run as root), stopped at the end of the test. It skips when
// the PostgreSQL server binaries are not installed.
func startPrivatePG(t *testing.T) *privatePG {
	t.Helper()
	bin := os.Getenv("DEVPKI_PG_BIN")
	if bin == "" {
		m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
		if len(m) == 0 {
			t.Skip("PostgreSQL server binaries (initdb, pg_ctl) not installed; set DEVPKI_PG_BIN")
		}
		bin = filepath.Dir(m[len(m)-1])
	}
	base, err := os.MkdirTemp("", "devpki-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	p := &privatePG{bin: bin, data: filepath.Join(base, "data"), sock: filepath.Join(base, "sock"),
		log: filepath.Join(base, "postgres.log"), asPostgres: os.Geteuid() == 0}
	for _, d := range []string{p.data, p.sock} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if p.asPostgres {
		// initdb refuses to run as root; the server's files belong to postgres.
		if err := os.Chmod(base, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{p.data, p.sock} {
			if out, err := exec.Command("chown", "postgres:postgres", f).CombinedOutput(); err != nil {
				t.Skipf("chown %s to postgres: %v %s", f, err, out)
			}
		}
		if err := os.WriteFile(p.log, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		exec.Command("chown", "postgres:postgres", p.log).Run()
	}
	p.run(t, "initdb", "-D", p.data, "--auth=trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
	p.start(t)
	t.Cleanup(func() {
		argv := p.command("pg_ctl", "stop", "-D", p.data, "-m", "immediate")
		exec.Command(argv[0], argv[1:]...).Run()
		if t.Failed() {
			if b, err := os.ReadFile(p.log); err == nil {
				t.Logf("private PostgreSQL log:\n%s", b)
			}
		}
	})
	return p
}

func (p *privatePG) command(tool string, args ...string) []string {
	argv := append([]string{filepath.Join(p.bin, tool)}, args...)
	if p.asPostgres {
		argv = append([]string{"runuser", "-u", "postgres", "--"}, argv...)
	}
	return argv
}

func (p *privatePG) run(t *testing.T, tool string, args ...string) {
	t.Helper()
	argv := p.command(tool, args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = os.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
}

func (p *privatePG) start(t *testing.T) {
	t.Helper()
	p.run(t, "pg_ctl", "start", "-D", p.data, "-w", "-t", "60", "-l", p.log,
		"-o", "-k "+p.sock+" -c listen_addresses='' -c fsync=off -c max_connections=50")
}

func (p *privatePG) stop(t *testing.T) {
	t.Helper()
	p.run(t, "pg_ctl", "stop", "-D", p.data, "-m", "fast", "-w", "-t", "60")
}

// DSN is the key=value connection string of the server's postgres database.
func (p *privatePG) DSN() string {
	return "host=" + p.sock + " user=postgres dbname=postgres sslmode=disable"
}
