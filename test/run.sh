#!/usr/bin/env bash
# The whole test suite: formatting, vet, staticcheck, unit tests, the race
# detector on the concurrent packages, the storetest suite on a real
# PostgreSQL server, and the end-to-end tests with the real binaries.
# Installs what it needs (Debian packages when run as root, Go tools from the
# module proxy) and starts a throwaway PostgreSQL on a unix socket.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:$(go env GOPATH)/bin"
step() { printf '\n==> %s\n' "$*"; }

need_pkgs=()
command -v openssl >/dev/null || need_pkgs+=(openssl)
# test/e2e EST and leaf-only tests: curl as a plain RFC 7030 client, presenting a certificate without its chain.
command -v curl >/dev/null || need_pkgs+=(curl)
# test/e2e store fault tests: chattr +i on the registry (a tmpfs full disk needs only mount).
command -v chattr >/dev/null || need_pkgs+=(e2fsprogs)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql)
# pkg/tpm: swtpm (TPM 2.0 emulator) for its tests; gcc and libssl-dev for the
# cgo simulator build (-tags tpmsimulator).
command -v swtpm >/dev/null || need_pkgs+=(swtpm)
command -v swtpm_setup >/dev/null || need_pkgs+=(swtpm-tools)
command -v gcc >/dev/null || need_pkgs+=(gcc)
[ -e /usr/include/openssl/evp.h ] || need_pkgs+=(libssl-dev)
# pkg/pki and test/e2e PKCS#11 tests: SoftHSM2 tokens in private temp dirs (SOFTHSM2_CONF per test).
command -v softhsm2-util >/dev/null || need_pkgs+=(softhsm2)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    step "installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "missing packages: ${need_pkgs[*]} (install them, or run as root)" >&2
  fi
fi
if ! command -v staticcheck >/dev/null; then
  step "installing staticcheck"
  go install honnef.co/go/tools/cmd/staticcheck@latest
fi

# Throwaway PostgreSQL for the HA store paths.
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -n "${pg_bin}" ] && [ -z "${DEVPKI_TEST_POSTGRES_DSN:-}" ]; then
  step "starting PostgreSQL from ${pg_bin}"
  pgdir=$(mktemp -d /tmp/devpki-pg.XXXXXX)
  run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
  [ "$(id -u)" = 0 ] && chown postgres "$pgdir"
  run_pg "$pg_bin/initdb" -D "$pgdir/data" -U devpki --auth=trust >/dev/null
  run_pg "$pg_bin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
    -o "-k $pgdir -c listen_addresses='' -c fsync=on -c max_connections=200" start >/dev/null
  trap 'run_pg "$pg_bin/pg_ctl" -D "$pgdir/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$pgdir"' EXIT
  run_pg "$pg_bin/createdb" -h "$pgdir" -U devpki devpki_test
  export DEVPKI_TEST_POSTGRES_DSN="host=$pgdir user=devpki dbname=devpki_test sslmode=disable"
fi
[ -n "${DEVPKI_TEST_POSTGRES_DSN:-}" ] || echo "warning: no PostgreSQL; its tests will be skipped" >&2
# The swtpm tests of pkg/tpm fail, rather than skip, when swtpm is missing.
export DEVPKI_REQUIRE_SWTPM="${DEVPKI_REQUIRE_SWTPM:-1}"
# The SoftHSM2 tests fail, rather than skip, when SoftHSM2 is missing.
export DEVPKI_REQUIRE_SOFTHSM="${DEVPKI_REQUIRE_SOFTHSM:-1}"

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "not gofmt'ed:"; echo "$unformatted"; exit 1; fi
step "go vet"
go vet ./...
step "staticcheck"
staticcheck ./...
CGO_ENABLED=1 staticcheck -tags tpmsimulator,swtpm ./pkg/tpm/... ./pkg/provision/... ./api/...
step "go test (race detector on the concurrent packages)"
go test -race -count=1 ./pkg/registry/... ./pkg/provision/... ./pkg/pki/mtls/... ./api/...
step "go test ./..."
go test -count=1 ./...
step "fuzz targets (a few seconds each; seed corpora in each package's testdata/fuzz)"
# Each target runs a count of inputs (-fuzztime Nx), not a duration: with a
# duration, Go 1.26's fuzzing coordinator can report "context deadline
# exceeded" as a failure when the time runs out under a busy CPU, with no
# failing input (golang/go#75804). The counts take 2-15 s each here.
# DEVPKI_FUZZTIME (a duration or Nx) overrides them all.
# Longer runs: go test -run '^$' -fuzz <Target> -fuzztime 10m <package>
for target in api:FuzzRequests:10000 pkg/pki:FuzzCSRIntake:50000 pkg/pki:FuzzValidateSerial:50000 \
  pkg/tpm/verify:FuzzEKCertificate:50000 pkg/tpm/verify:FuzzCertification:50000 cmd/ca:FuzzLoadConfig:5000; do
  count=${target##*:}; target=${target%:*}
  if ! out=$(go test -run '^$' -fuzz "^${target#*:}\$" -fuzztime "${DEVPKI_FUZZTIME:-${count}x}" "./${target%%:*}" 2>&1); then
    echo "$out" | tail -40
    echo "fuzz ${target} failed; a failing input it found is written to ${target%%:*}/testdata/fuzz/${target#*:} (rerun: go test -run ${target#*:} ./${target%%:*})"
    exit 1
  fi
done
step "go test -tags tpmsimulator,swtpm (TPM simulator and swtpm, cgo)"
CGO_ENABLED=1 go test -count=1 -tags tpmsimulator,swtpm ./pkg/tpm/... ./pkg/provision/... ./api/...
step "Debian packages (make deb; as root: dpkg -i, files, users, units, dpkg -r/--purge)"
./test/packages.sh
