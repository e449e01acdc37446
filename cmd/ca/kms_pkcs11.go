package main

// The PKCS#11 key manager registers itself with go.step.sm/crypto/kms, so
// ca.key (and 'ca init --kms') may name a key in an HSM: "pkcs11:…". Without
// cgo the package registers a stub that answers "compiled without cgo or
// PKCS#11 support", so a CGO_ENABLED=0 build still compiles and says so.
import _ "go.step.sm/crypto/kms/pkcs11"
