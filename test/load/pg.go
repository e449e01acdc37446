package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// privatePG is a PostgreSQL server started for one load run (-db postgres):
// its own cluster in a temporary directory, on a Unix socket, so that its
// CPU time (the postmaster and its backends) is the registry's alone.
type privatePG struct {
	bin, base, data, sock string
	asPostgres            bool
}

// startPrivatePG runs initdb and pg_ctl start (as the user postgres when
// run as root) in a new directory under work.
func startPrivatePG(work string) (*privatePG, error) {
	bin := os.Getenv("DEVPKI_PG_BIN")
	if bin == "" {
		m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
		if len(m) == 0 {
			return nil, fmt.Errorf("-db postgres: PostgreSQL server binaries not found (install postgresql or set DEVPKI_PG_BIN)")
		}
		bin = filepath.Dir(m[len(m)-1])
	}
	p := &privatePG{bin: bin, base: filepath.Join(work, "pg"), asPostgres: os.Geteuid() == 0}
	p.data, p.sock = filepath.Join(p.base, "data"), filepath.Join(p.base, "sock")
	if err := os.MkdirAll(p.sock, 0o700); err != nil {
		return nil, err
	}
	if err := os.Mkdir(p.data, 0o700); err != nil {
		return nil, err
	}
	if p.asPostgres {
		for _, d := range []string{work, p.base} {
			if err := os.Chmod(d, 0o755); err != nil {
				return nil, err
			}
		}
		if out, err := exec.Command("chown", "-R", "postgres:postgres", p.base).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("chown %s: %v %s", p.base, err, out)
		}
	}
	if err := p.run("initdb", "-D", p.data, "--auth=trust", "-U", "postgres", "-E", "UTF8"); err != nil {
		return nil, err
	}
	// Durable commits as in production (fsync on), so the figures compare
	// with SQLite's synchronous=FULL.
	if err := p.run("pg_ctl", "start", "-D", p.data, "-w", "-t", "60", "-l", filepath.Join(p.base, "postgres.log"),
		"-o", "-k "+p.sock+" -c listen_addresses=''"); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *privatePG) run(tool string, args ...string) error {
	argv := append([]string{filepath.Join(p.bin, tool)}, args...)
	if p.asPostgres {
		argv = append([]string{"runuser", "-u", "postgres", "--"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = os.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return nil
}

func (p *privatePG) stop() {
	if p != nil {
		p.run("pg_ctl", "stop", "-D", p.data, "-m", "fast", "-w")
	}
}

// DSN is the connection string of the server's postgres database.
func (p *privatePG) DSN() string {
	return "host=" + p.sock + " user=postgres dbname=postgres sslmode=disable"
}

// cpu is the CPU time of the whole server: the postmaster with the
// children it reaped, and its live children (the backends ca serve keeps
// open, the WAL writer, the checkpointer ...).
func (p *privatePG) cpu() (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(p.data, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	pm, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		return 0, fmt.Errorf("postmaster.pid: %w", err)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	var total int64
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		ppid, _ := strconv.Atoi(fields[1])
		if pid != pm && ppid != pm {
			continue
		}
		// utime, stime (14, 15), and for the postmaster cutime, cstime (16, 17).
		last := 12
		if pid == pm {
			last = 14
		}
		for i := 11; i <= last; i++ {
			v, _ := strconv.ParseInt(fields[i], 10, 64)
			total += v
		}
	}
	const hz = 100 // USER_HZ on Linux
	return time.Duration(total) * time.Second / hz, nil
}
