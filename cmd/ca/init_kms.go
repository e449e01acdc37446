package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"devpki/pkg/pki"
)

// checkKMS refuses --kms flag combinations before anything is made.
func (o initOptions) checkKMS() error {
	switch {
	case o.KMS == "" && (o.KMSKey != "" || o.KMSRoot):
		return errors.New("--kms-key and --kms-root need --kms 'pkcs11:module-path=LIB;token=LABEL?pin-source=FILE'")
	case o.KMS != "" && !pki.IsPKCS11(o.KMS):
		return fmt.Errorf("--kms %q: only PKCS#11 tokens are supported: 'pkcs11:module-path=LIB;token=LABEL?pin-source=FILE'", pki.RedactKeyURI(o.KMS))
	case o.KMSKey != "" && !pki.IsPKCS11(o.KMSKey):
		return fmt.Errorf("--kms-key %q: name a key in the token: 'pkcs11:id=HEX;object=LABEL'", pki.RedactKeyURI(o.KMSKey))
	}
	return nil
}

// reportTokenKeys tells the operator where the CA keys are, since no file
// shows it.
func reportTokenKeys(w io.Writer, files *pki.CAFiles) {
	fmt.Fprintf(w, "issuing key in the PKCS#11 token: %s\n", pki.RedactKeyURI(files.IntermediateKeyURI))
	if files.RootKeyURI != "" {
		fmt.Fprintf(w, "root key in the PKCS#11 token: %s\n", pki.RedactKeyURI(files.RootKeyURI))
	} else {
		fmt.Fprintf(w, "root key: %s (encrypted; move it offline once the CA is set up)\n", files.RootKey)
	}
	if strings.Contains(strings.ToLower(files.IntermediateKeyURI), "pin-value=") {
		fmt.Fprintln(w, "note: the token PIN is written into ca.yaml (mode 0600); prefer pin-source=FILE to keep it out of the configuration")
	}
}
