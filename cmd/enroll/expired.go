package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"devpki/api/client"
	"devpki/api/wire"
	"devpki/pkg/pki"
)

// Renewal after long offline. A device that wakes up with an expired
// certificate cannot renew over mutual TLS; it asks the CA for a challenge
// (a fresh nonce kept in the CA's registry), signs it with the expired
// certificate's key (the nonce bound to the certificate and to the CSR of
// a re-key), and gets a new certificate — while the certificate expired no
// longer than the CA's grace period ago and was not revoked. A TPM key
// also has the AK certify it over the nonce (the CA checks the AK the
// device activated at enrollment). Beyond the grace period the CA's answer
// says how to re-enroll with a token bound to the serial. EST has no such
// flow.

// loadForRenewal is recoverIdentity that also accepts an expired
// certificate: judged as of its own expiry, every other check holds (the
// key matches, the chain verifies to the pinned root). The caller compares
// the certificate's NotAfter with now to tell.
func loadForRenewal(ctx context.Context, kr *keyring, pin string, now time.Time, logf func(string, ...any)) (*identity, error) {
	id, err := recoverIdentity(ctx, kr, pin, now, logf)
	if err == nil {
		return id, nil
	}
	b, rerr := os.ReadFile(filepath.Join(kr.dir, certFile))
	if rerr != nil {
		return nil, err
	}
	certs, perr := client.ParseCertificatesPEM(b)
	if perr != nil || now.Before(certs[0].NotAfter) {
		return nil, err
	}
	expired, eerr := recoverIdentity(ctx, kr, pin, certs[0].NotAfter, logf)
	if eerr != nil {
		return nil, err
	}
	return expired, nil
}

// renewExpired renews old, whose certificate has expired, by proof of
// possession of its key; a new key (stored like the old one) when rekey
// is set or the CA requires one. The new identity replaces the old one
// once it verifies (installRenewed).
func renewExpired(ctx context.Context, cfg *config, ci caInfo, kr *keyring, old *identity, rekey bool, failpoint func(string) error) (*identity, error) {
	expiredAt := old.Cert.NotAfter.UTC().Format(time.RFC3339)
	if ci.Protocol == protocolEST {
		return nil, fmt.Errorf("certificate expired at %s: EST (RFC 7030) has no renewal of an expired certificate; "+
			"re-enroll with a bootstrap token bound to this serial (on the CA: ca token create --serial %s; here: enroll --protocol est --token-file ...)",
			expiredAt, old.Cert.Subject.SerialNumber)
	}
	cfg.logf("certificate %s expired at %s: renewing by proof of possession of its key", old.Cert.SerialNumber.Text(16), expiredAt)
	pool := x509.NewCertPool()
	pool.AddCert(old.Root)
	opts := []client.Option{client.WithRoots(pool)}
	if cfg.UserAgent != "" {
		opts = append(opts, client.WithUserAgent(cfg.UserAgent))
	}
	cl, err := client.New(ci.URL, opts...)
	if err != nil {
		return nil, usageErr("CA URL: %v", err)
	}
	r := retrier{cfg: cfg, deadline: cfg.Now().Add(cfg.Timeout)}
	certPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: old.Cert.Raw}))
	var key crypto.Signer
	var resp *wire.EnrollResponse
	for attempt := 0; ; attempt++ {
		// A challenge is spent by any answer: each attempt asks for its own.
		err = r.do(ctx, "renew expired certificate", func(ctx context.Context) error {
			ch, err := cl.RenewExpiredChallenge(ctx, &wire.ExpiredChallengeRequest{Certificate: certPEM})
			if err != nil {
				return err
			}
			var req *wire.RenewExpiredRequest
			if key, req, err = expiredRequest(ctx, kr, old, ch.Nonce, rekey); err != nil {
				return err
			}
			req.ChallengeID, req.Certificate = ch.ChallengeID, certPEM
			resp, err = cl.RenewExpired(ctx, req)
			return err
		})
		if err != nil && client.IsRekeyRequired(err) && !rekey && attempt == 0 {
			cfg.logf("the CA requires a new key")
			rekey = true
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("certificate expired at %s and could not be renewed: %w", expiredAt, err)
		}
		break
	}
	id, err := checkReply(resp, key, old.roots(), cfg.Now())
	if err != nil {
		return nil, fmt.Errorf("CA reply refused: %w", err)
	}
	return installRenewed(ctx, cfg, kr, old, id, failpoint)
}

// expiredRequest builds the answer to a challenge with nonce: the old
// key's signature over pki.ExpiredRenewalMessage, for a re-key a new key
// and its CSR, and for a TPM key the AK's certification of the key to be
// certified over pki.ExpiredRenewalQualifyingData. It returns the key the
// new certificate will hold.
func expiredRequest(ctx context.Context, kr *keyring, old *identity, nonce []byte, rekey bool) (crypto.Signer, *wire.RenewExpiredRequest, error) {
	qualifying := pki.ExpiredRenewalQualifyingData(nonce, old.Cert)
	req := &wire.RenewExpiredRequest{}
	key := old.Key
	var csrDER []byte
	if rekey {
		var err error
		if key, req.Certify, err = kr.newKeyLike(ctx, old.Key, qualifying); err != nil {
			return nil, nil, tpmHint(err)
		}
		if csrDER, err = renewalCSR(key, old.Cert); err != nil {
			return nil, nil, err
		}
		req.CSR = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}))
	} else if tk, ok := old.Key.(*tpmKey); ok {
		certify, err := kr.recertify(ctx, tk, qualifying)
		if err != nil {
			return nil, nil, tpmHint(err)
		}
		req.Certify = certify
	}
	_, sig, err := pki.SignDetached(rand.Reader, old.Key, pki.ExpiredRenewalMessage(nonce, old.Cert, csrDER))
	if err != nil {
		return nil, nil, tpmHint(fmt.Errorf("sign the CA's challenge: %w", err))
	}
	req.Signature = sig
	return key, req, nil
}

// recertify has the AK certify the TPM key tk again over qualifying.
func (k *keyring) recertify(ctx context.Context, tk *tpmKey, qualifying []byte) (*wire.TPMCertificationParameters, error) {
	t, err := k.openTPM(ctx)
	if err != nil {
		return nil, err
	}
	key, err := t.LoadKey(ctx, tk.name)
	if err != nil {
		return nil, err
	}
	cp, err := key.Recertify(ctx, qualifying)
	if err != nil {
		return nil, fmt.Errorf("certify the TPM key by its AK: %w", err)
	}
	return &wire.TPMCertificationParameters{
		Public: cp.Public, CreateData: cp.CreateData, CreateAttestation: cp.CreateAttestation, CreateSignature: cp.CreateSignature,
	}, nil
}
