#!/usr/bin/env bash
# Builds the Debian packages (make deb) and, as root, installs them with
# dpkg -i and checks what they put on the machine: files and modes, the
# system users, the systemd units (systemd-analyze verify where it can run),
# that nothing was enabled or started, that /usr/bin/ca runs; then removes
# and purges them. Not root: builds and inspects the packages only.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "packages: FAIL: $*" >&2; exit 1; }

make deb >/dev/null
ca_deb=$(ls -t dist/devpki-ca_*.deb | head -1)
enroll_deb=$(ls -t dist/devpki-enroll_*.deb | head -1)
echo "packages: built $ca_deb $enroll_deb"

# Contents, without installing.
ca_list=$(dpkg-deb -c "$ca_deb")
enroll_list=$(dpkg-deb -c "$enroll_deb")
for want in '-rwxr-xr-x root/root .* ./usr/bin/ca$' '-rw-r--r-- root/root .* ./lib/systemd/system/devpki-ca.service$'; do
  grep -Eq -- "$want" <<<"$ca_list" || fail "devpki-ca lacks $want"
done
for want in '-rwxr-xr-x root/root .* ./usr/bin/enroll$' '-rw-r--r-- root/root .* ./lib/systemd/system/devpki-enroll.service$' \
  '-rw-r----- root/root .* ./etc/devpki/enroll.env$'; do
  grep -Eq -- "$want" <<<"$enroll_list" || fail "devpki-enroll lacks $want"
done
[ "$(dpkg-deb -f "$ca_deb" Package)" = devpki-ca ] || fail "devpki-ca: control Package"
ctl=$(mktemp -d); trap 'rm -rf "$ctl"' EXIT
dpkg-deb -e "$enroll_deb" "$ctl/enroll"
grep -qx /etc/devpki/enroll.env "$ctl/enroll/conffiles" || fail "enroll.env is not a conffile"
for unit in packaging/systemd/devpki-ca.service packaging/systemd/devpki-enroll.service; do
  for key in NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes 'CapabilityBoundingSet=$' StateDirectory=; do
    grep -Eq "^$key" "$unit" || fail "$unit: no $key"
  done
done
grep -q '^DeviceAllow=/dev/tpmrm0' packaging/systemd/devpki-enroll.service || fail "agent unit: no DeviceAllow=/dev/tpmrm0"
grep -q '^SupplementaryGroups=tss' packaging/systemd/devpki-enroll.service || fail "agent unit: no SupplementaryGroups=tss"

if [ "$(id -u)" != 0 ]; then
  echo "packages: not root: dpkg -i, users and units not checked (run test/packages.sh as root)"
  exit 0
fi
if dpkg -s devpki-ca >/dev/null 2>&1 || dpkg -s devpki-enroll >/dev/null 2>&1; then
  echo "packages: devpki packages are already installed on this machine: install check skipped (it would remove them)"
  exit 0
fi

echo "packages: dpkg -i"
out=$(dpkg -i "$ca_deb" "$enroll_deb" 2>&1) || { echo "$out"; fail "dpkg -i"; }
cleanup() {
  dpkg --purge devpki-ca devpki-enroll >/dev/null 2>&1 || true
  rm -rf "$ctl"
}
trap cleanup EXIT
grep -q "systemctl enable --now devpki-ca" <<<"$out" || fail "postinst does not tell what to do next:\n$out"

[ -x /usr/bin/ca ] && [ -x /usr/bin/enroll ] || fail "binaries not installed"
/usr/bin/ca --help | grep -q 'backup --config' || fail "/usr/bin/ca --help"
/usr/bin/enroll -h >/dev/null 2>&1 || [ $? -le 2 ] || fail "/usr/bin/enroll -h"
for u in devpki-ca devpki-enroll; do
  ent=$(getent passwd "$u") || fail "no system user $u"
  uid=$(cut -d: -f3 <<<"$ent")
  [ "$uid" -lt 1000 ] || fail "$u is not a system user (uid $uid)"
  case "$ent" in *nologin*|*/bin/false*) ;; *) fail "$u has a login shell: $ent";; esac
done
id -nG devpki-enroll | grep -qw tss || fail "devpki-enroll is not in the group tss"
[ "$(stat -c '%a %U %G' /etc/devpki/enroll.env)" = "640 root devpki-enroll" ] || fail "enroll.env: $(stat -c '%a %U %G' /etc/devpki/enroll.env)"
[ "$(stat -c '%a %G' /etc/devpki)" = "750 devpki-ca" ] || fail "/etc/devpki: $(stat -c '%a %U %G' /etc/devpki)"
for unit in devpki-ca devpki-enroll; do
  [ -f "/lib/systemd/system/$unit.service" ] || fail "$unit.service not installed"
  [ ! -e "/etc/systemd/system/multi-user.target.wants/$unit.service" ] || fail "$unit was enabled by the install"
done

# systemd-analyze verify loads units offline; in a container without
# systemd it may be unable to run at all: tell a known-good unit apart.
if command -v systemd-analyze >/dev/null; then
  probe="$ctl/devpki-probe.service"
  printf '[Unit]\nDescription=probe\n[Service]\nExecStart=/bin/true\n' >"$probe"
  if systemd-analyze verify "$probe" >/dev/null 2>&1; then
    for unit in devpki-ca devpki-enroll; do
      v=$(systemd-analyze verify "/lib/systemd/system/$unit.service" 2>&1) || fail "systemd-analyze verify $unit:\n$v"
      [ -z "$v" ] || fail "systemd-analyze verify $unit warns:\n$v"
    done
    echo "packages: systemd-analyze verify: both units clean"
  else
    echo "packages: systemd-analyze cannot verify even a trivial unit here ($(systemd-analyze verify "$probe" 2>&1 | head -1)): unit verification skipped"
  fi
else
  echo "packages: no systemd-analyze: unit verification skipped"
fi

echo "packages: dpkg -r"
echo "ENROLL_ARGS=--ca https://ca.example:8443" >>/etc/devpki/enroll.env
dpkg -r devpki-ca devpki-enroll >/dev/null
[ ! -e /usr/bin/ca ] && [ ! -e /usr/bin/enroll ] || fail "binaries left after dpkg -r"
[ ! -e /lib/systemd/system/devpki-ca.service ] || fail "unit left after dpkg -r"
grep -q ca.example /etc/devpki/enroll.env || fail "dpkg -r did not keep the edited conffile"
echo "packages: dpkg --purge"
dpkg --purge devpki-ca devpki-enroll >/dev/null
[ ! -e /etc/devpki/enroll.env ] || fail "conffile left after purge"
dpkg -s devpki-ca >/dev/null 2>&1 && fail "devpki-ca still known to dpkg after purge"
echo "packages: ok"
