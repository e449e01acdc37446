.PHONY: run test build bench load load-tpm deb

# Run the CA in development mode (embedded SQLite in ./devpki-data).
run:
	go run ./cmd/ca serve --dev

# Everything CI runs.
test:
	./test/run.sh

build:
	go build -o bin/ca ./cmd/ca
	go build -o bin/enroll ./cmd/enroll

bench:
	go test -run '^$$' -bench . -benchmem ./pkg/...

# Whole-process load: N enrollments, each over a new TLS connection.
load:
	go run ./test/load -n 20000 -c 64

# TPM attestation load: 8 swtpm instances enroll by attestation, end to end
# (needs swtpm, swtpm-tools and root for swtpm's local CA).
load-tpm:
	go run ./test/load -target tpm -devices 8 -n 400

# Debian packages devpki-ca and devpki-enroll into dist/ (nfpm as a library:
# packaging/mkdeb). VERSION: the file VERSION plus the commit, or a vX.Y.Z tag.
VERSION ?= $(shell ./packaging/version.sh)
deb:
	mkdir -p dist/bin
	CGO_ENABLED=1 go build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o dist/bin/ca ./cmd/ca
	CGO_ENABLED=1 go build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o dist/bin/enroll ./cmd/enroll
	go run ./packaging/mkdeb --version "$(VERSION)" --bin dist/bin --out dist
