// Command mkdeb builds the devpki-ca and devpki-enroll Debian packages from
// already built binaries, with nfpm as a library ('make deb' runs it):
//
//	go run ./packaging/mkdeb --version 0.1.0 --bin dist/bin --out dist
//
// Each package holds its binary in /usr/bin, its hardened systemd unit, its
// maintainer scripts (a system user; nothing started on first install) and,
// for the agent, /etc/devpki/enroll.env as a conffile.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkdeb:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("mkdeb", flag.ContinueOnError)
	version := fs.String("version", "", "package version, e.g. 0.1.0 or 0.1.0+git20261202.3fc8107 (required)")
	bin := fs.String("bin", "dist/bin", "directory holding the built ca and enroll binaries")
	src := fs.String("src", "packaging", "directory of the units, scripts and conffiles")
	doc := fs.String("doc", "README.md", "README installed as the packages' documentation")
	out := fs.String("out", "dist", "directory the .deb files are written to")
	arch := fs.String("arch", runtime.GOARCH, "Debian architecture of the binaries")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *version == "" {
		return errors.New("--version is required")
	}
	for _, p := range []string{filepath.Join(*bin, "ca"), filepath.Join(*bin, "enroll"), *doc} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%w (build the binaries first: make deb)", err)
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	mtime := time.Now().UTC().Truncate(time.Second)
	if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
		var sec int64
		if _, err := fmt.Sscanf(v, "%d", &sec); err == nil {
			mtime = time.Unix(sec, 0).UTC()
		}
	}
	s := func(p string) string { return filepath.Join(*src, p) }
	file := func(from, to string, mode os.FileMode) *files.Content {
		return &files.Content{Source: from, Destination: to, FileInfo: &files.ContentFileInfo{Mode: mode, Owner: "root", Group: "root"}}
	}
	dir := func(to string, mode os.FileMode) *files.Content {
		return &files.Content{Destination: to, Type: files.TypeDir, FileInfo: &files.ContentFileInfo{Mode: mode, Owner: "root", Group: "root"}}
	}
	common := nfpm.Info{
		Arch: *arch, Platform: "linux", Version: *version,
		Section: "net", Priority: "optional",
		Maintainer: "devpki maintainers <devpki@localhost>",
		Vendor:     "devpki", Homepage: "https://devpki.local/", License: "Proprietary",
		MTime: mtime,
	}
	pkgs := []nfpm.Info{
		withOverrides(common, "devpki-ca",
			"devpki certificate authority: device enrollment, renewal, revocation, admin API\n"+
				" The 'ca' command and the devpki-ca systemd unit (not started on install).",
			nfpm.Overridables{
				Depends:  []string{"adduser", "libc6"},
				Suggests: []string{"postgresql-client"},
				Contents: files.Contents{
					file(filepath.Join(*bin, "ca"), "/usr/bin/ca", 0o755),
					file(s("systemd/devpki-ca.service"), "/lib/systemd/system/devpki-ca.service", 0o644),
					file(*doc, "/usr/share/doc/devpki-ca/README.md", 0o644),
					file("configs/ca.yaml", "/usr/share/doc/devpki-ca/ca.yaml.example", 0o644),
					dir("/etc/devpki", 0o755),
				},
				Scripts: nfpm.Scripts{PostInstall: s("scripts/ca-postinst.sh"), PreRemove: s("scripts/ca-prerm.sh"), PostRemove: s("scripts/ca-postrm.sh")},
			}),
		withOverrides(common, "devpki-enroll",
			"devpki device agent: enroll at first boot, renew for years\n"+
				" The 'enroll' command and the devpki-enroll systemd unit (not started on install).",
			nfpm.Overridables{
				Depends: []string{"adduser", "libc6"},
				Contents: files.Contents{
					file(filepath.Join(*bin, "enroll"), "/usr/bin/enroll", 0o755),
					file(s("systemd/devpki-enroll.service"), "/lib/systemd/system/devpki-enroll.service", 0o644),
					file(*doc, "/usr/share/doc/devpki-enroll/README.md", 0o644),
					{Source: s("etc/enroll.env"), Destination: "/etc/devpki/enroll.env", Type: files.TypeConfigNoReplace,
						FileInfo: &files.ContentFileInfo{Mode: 0o640, Owner: "root", Group: "root"}},
					dir("/etc/devpki", 0o755),
				},
				Scripts: nfpm.Scripts{PostInstall: s("scripts/enroll-postinst.sh"), PreRemove: s("scripts/enroll-prerm.sh"), PostRemove: s("scripts/enroll-postrm.sh")},
			}),
	}
	for i := range pkgs {
		path, err := build(&pkgs[i], *out)
		if err != nil {
			return fmt.Errorf("%s: %w", pkgs[i].Name, err)
		}
		fmt.Println(path)
	}
	return nil
}

func withOverrides(base nfpm.Info, name, desc string, o nfpm.Overridables) nfpm.Info {
	base.Name, base.Description, base.Overridables = name, desc, o
	return base
}

// build writes one .deb under out, atomically.
func build(info *nfpm.Info, out string) (string, error) {
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", err
	}
	pkg, err := nfpm.Get("deb")
	if err != nil {
		return "", err
	}
	target := filepath.Join(out, pkg.ConventionalFileName(info))
	tmp, err := os.CreateTemp(out, ".mkdeb-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	info.Target = target
	if err := pkg.Package(info, tmp); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	return target, os.Rename(tmp.Name(), target)
}
