package mtls

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.step.sm/crypto/pemutil"
)

// keyPair is one consistent certificate and key as loaded.
type keyPair struct {
	tls   *tls.Certificate
	leaf  *x509.Certificate
	chain []*x509.Certificate // after the leaf
	stamp fileStamp
}

// fileStamp identifies the versions of the files a keyPair came from: an
// atomic rename changes the inode even when mtime and size do not.
type fileStamp [3]os.FileInfo

func (a fileStamp) same(b fileStamp) bool {
	for i := range a {
		switch {
		case a[i] == nil && b[i] == nil:
		case a[i] == nil || b[i] == nil:
			return false
		case !os.SameFile(a[i], b[i]) || !a[i].ModTime().Equal(b[i].ModTime()) || a[i].Size() != b[i].Size():
			return false
		}
	}
	return true
}

// certReloader serves the current keyPair and reloads it when the files
// change, checked at most once per reloadCheckInterval on use.
type certReloader struct {
	certFile, chainFile, keyFile string
	password                     []byte
	getKey                       func() (crypto.Signer, error)
	now                          func() time.Time
	log                          *slog.Logger

	cur       atomic.Pointer[keyPair]
	lastCheck atomic.Int64 // unix nanoseconds of the last stat
	mu        sync.Mutex   // serializes loads
	failed    fileStamp    // files that last failed to load (logged once)
}

func (r *certReloader) current() *keyPair { return r.cur.Load() }

// get returns the certificate to present, first reloading it if the files
// changed since the last check (at most once per second).
func (r *certReloader) get() *tls.Certificate {
	now := r.now().UnixNano()
	last := r.lastCheck.Load()
	if now-last >= int64(reloadCheckInterval) && r.lastCheck.CompareAndSwap(last, now) {
		if st, err := r.stat(); err == nil && !st.same(r.current().stamp) {
			_ = r.load() // logged; the previous pair stays in use
		}
	}
	return r.current().tls
}

func (r *certReloader) stat() (fileStamp, error) {
	var st fileStamp
	for i, f := range []string{r.certFile, r.chainFile, r.keyFile} {
		if f == "" {
			continue
		}
		fi, err := os.Stat(f)
		if err != nil {
			return st, err
		}
		st[i] = fi
	}
	return st, nil
}

// load reads the files and installs the pair if the key matches the
// certificate; otherwise it keeps the previous pair and logs.
func (r *certReloader) load() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Stat before reading: if a file is replaced while we read, the stamp
	// is older than the contents and the next check loads again.
	st, err := r.stat()
	if err == nil {
		var kp *keyPair
		kp, err = r.read()
		if err == nil {
			kp.stamp = st
			prev := r.cur.Swap(kp)
			r.failed = fileStamp{}
			if prev != nil && !prev.leaf.Equal(kp.leaf) {
				r.log.Info("mtls: reloaded certificate", "file", r.certFile,
					"serial", kp.leaf.SerialNumber.Text(16), "not_after", kp.leaf.NotAfter)
			}
			return nil
		}
	}
	err = fmt.Errorf("load %s: %w", r.certFile, err)
	if r.cur.Load() != nil && !st.same(r.failed) {
		r.failed = st
		r.log.Error("mtls: certificate reload failed; keeping the previous certificate", "err", err)
	}
	return err
}

func (r *certReloader) read() (*keyPair, error) {
	certs, err := pemutil.ReadCertificateBundle(r.certFile)
	if err != nil {
		return nil, err
	}
	if r.chainFile != "" {
		more, err := pemutil.ReadCertificateBundle(r.chainFile)
		if err != nil {
			return nil, err
		}
		certs = append(certs, more...)
	}
	var signer crypto.Signer
	if r.getKey != nil {
		if signer, err = r.getKey(); err != nil {
			return nil, fmt.Errorf("get key: %w", err)
		}
	} else {
		var popts []pemutil.Options
		if len(r.password) > 0 {
			popts = append(popts, pemutil.WithPassword(r.password))
		}
		k, err := pemutil.Read(r.keyFile, popts...)
		if err != nil {
			return nil, fmt.Errorf("read key %s: %w", r.keyFile, err)
		}
		var ok bool
		if signer, ok = k.(crypto.Signer); !ok {
			return nil, fmt.Errorf("%s holds no private key", r.keyFile)
		}
	}
	leaf := certs[0]
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(signer.Public()) {
		return nil, errors.New("certificate and key do not match")
	}
	tc := &tls.Certificate{PrivateKey: signer, Leaf: leaf}
	for _, c := range certs {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return &keyPair{tls: tc, leaf: leaf, chain: certs[1:]}, nil
}
