//go:build tpmsimulator

package verify

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
	"github.com/smallstep/go-attestation/attest"
	steptpm "go.step.sm/crypto/tpm"
	"go.step.sm/crypto/tpm/simulator"
	"go.step.sm/crypto/tpm/storage"
)

// The simulator is process-wide (a second Open blocks until the first
// closes), so every test in this package shares one, opened by TestMain, and
// none of them run in parallel.
var (
	simDev simulator.Simulator
	simTPM *steptpm.TPM
)

func TestMain(m *testing.M) {
	os.Exit(runWithSimulator(m))
}

func runWithSimulator(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tpmverify-sim-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if simDev, err = simulator.New(); err != nil {
		fmt.Fprintln(os.Stderr, "simulator:", err)
		return 1
	}
	if err := simDev.Open(); err != nil {
		fmt.Fprintln(os.Stderr, "open simulator:", err)
		return 1
	}
	defer simDev.Close()
	simTPM, err = steptpm.New(steptpm.WithSimulator(simDev), steptpm.WithStore(storage.NewDirstore(dir)), steptpm.WithDisableDownload())
	if err != nil {
		fmt.Fprintln(os.Stderr, "tpm:", err)
		return 1
	}
	return m.Run()
}

var objectSeq atomic.Int64

func objectName(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, objectSeq.Add(1))
}

// simEKPub returns the simulator's RSA EK public key.
func simEKPub(t testing.TB) *rsa.PublicKey {
	t.Helper()
	eks, err := simTPM.GetEKs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, ek := range eks {
		if k, ok := ek.Public().(*rsa.PublicKey); ok {
			return k
		}
	}
	t.Fatal("simulator has no RSA EK")
	return nil
}

// simAK creates a fresh AK and returns it with its attestation parameters.
func simAK(t testing.TB) (*steptpm.AK, attest.AttestationParameters) {
	t.Helper()
	ctx := context.Background()
	ak, err := simTPM.CreateAK(ctx, objectName("ak"))
	if err != nil {
		t.Fatal(err)
	}
	params, err := ak.AttestationParameters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ak, params
}

// simKey creates an ECDSA P-256 key certified by ak with nonce as qualifying
// data, and a CSR signed by it.
func simKey(t testing.TB, ak *steptpm.AK, nonce []byte) (attest.CertificationParameters, *x509.CertificateRequest) {
	t.Helper()
	ctx := context.Background()
	key, err := simTPM.AttestKey(ctx, ak.Name(), objectName("key"), steptpm.AttestKeyConfig{Algorithm: "ECDSA", Size: 256, QualifyingData: nonce})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := key.CertificationParameters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := key.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return cp, mustCSR(t, signer)
}

func mustCSR(t testing.TB, signer crypto.Signer) *x509.CertificateRequest {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "device-1", SerialNumber: "SN1"}}, signer)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func steptpmCredential(ch *Challenge) steptpm.EncryptedCredential {
	return steptpm.EncryptedCredential(ch.Credential)
}

func activate(t testing.TB, ak *steptpm.AK, ch *Challenge) []byte {
	t.Helper()
	secret, err := ak.ActivateCredential(context.Background(), steptpm.EncryptedCredential(ch.Credential))
	if err != nil {
		t.Fatalf("ActivateCredential: %v", err)
	}
	return secret
}

// certifyAKWithItself runs TPM2_Certify over the AK, signed by the AK: real
// evidence for a restricted "application key".
func certifyAKWithItself(t testing.TB, ak *steptpm.AK, params attest.AttestationParameters, nonce []byte) attest.CertificationParameters {
	t.Helper()
	blobs, err := ak.Blobs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := blobs.Public()
	if err != nil {
		t.Fatal(err)
	}
	priv, err := blobs.Private()
	if err != nil {
		t.Fatal(err)
	}
	// Blobs carry tpm2-tools' 16-bit size headers; Load adds its own.
	h, _, err := legacy.Load(simDev, tpmutil.Handle(0x81000001), "", pub[2:], priv[2:])
	if err != nil {
		t.Fatalf("load AK: %v", err)
	}
	defer legacy.FlushContext(simDev, h)
	att, sig, err := legacy.CertifyEx(simDev, "", "", h, h, nonce, legacy.SigScheme{Alg: legacy.AlgRSASSA, Hash: legacy.AlgSHA256})
	if err != nil {
		t.Fatalf("certify AK: %v", err)
	}
	return attest.CertificationParameters{Public: params.Public, CreateAttestation: att, CreateSignature: sig}
}
