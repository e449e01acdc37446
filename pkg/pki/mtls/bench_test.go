package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"testing"
)

// BenchmarkRevocationCheck measures VerifyConnection's revocation lookup
// for an unrevoked peer against CRLs of 0 and 100k entries.
func BenchmarkRevocationCheck(b *testing.B) {
	for _, n := range []int{0, 100_000} {
		b.Run("entries="+itoa(n), func(b *testing.B) {
			e := newEnv(b)
			serials := make([]*big.Int, n)
			for i := range serials {
				serials[i] = new(big.Int).Lsh(big.NewInt(int64(i+1)), 100)
			}
			e.publishCRL(serials...)
			c, k, _ := e.issueServer("server")
			src := e.source(c, k, nil)
			_, _, is := e.issueDevice("device", "SN-1")
			cs := tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{is.Certificate, e.ca.CA.Intermediate, e.ca.CA.Root}}}
			if got := len(src.crl.sources[0].state.Load().revoked); got != n {
				b.Fatalf("held %d entries, want %d", got, n)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := src.VerifyConnection(cs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHandshake measures a full mTLS handshake (fresh TCP and TLS
// connection on loopback, ECDSA P-256 both sides) with and without the CRL
// check, and a resumed TLS 1.3 session with the check.
func BenchmarkHandshake(b *testing.B) {
	for _, tc := range []struct {
		name   string
		noCRL  bool
		resume bool
	}{{name: "full/crl"}, {name: "full/no-crl", noCRL: true}, {name: "resumed/crl", resume: true}} {
		b.Run(tc.name, func(b *testing.B) {
			e := newEnv(b)
			sc, sk, _ := e.issueServer("server")
			mod := func(o *Options) {
				if tc.noCRL {
					o.CRLURL = ""
				}
			}
			srv := startTLSServer(b, e.source(sc, sk, mod).ServerConfig())
			dc, dk, _ := e.issueDevice("device", "SN-1")
			client := e.source(dc, dk, mod)
			cfg := client.ClientConfig()
			if _, err := dial(srv.addr, cfg); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if !tc.resume {
					cfg = client.ClientConfig()
				}
				cs, err := dial(srv.addr, cfg)
				if err != nil {
					b.Fatal(err)
				}
				if cs.DidResume != tc.resume {
					b.Fatalf("DidResume %v", cs.DidResume)
				}
			}
		})
	}
}

func itoa(n int) string { return big.NewInt(int64(n)).String() }
