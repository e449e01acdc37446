package api

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// DefaultMaxHandshakes is Limits.MaxHandshakes' default: a few TLS
// handshakes per core keep the CPUs busy; more only make every runnable
// goroutine, an admin's request among them, wait longer for a CPU.
const DefaultMaxHandshakes = 16

// handshakeTimeout bounds one server handshake, its wait for a slot
// included: a stalled client cannot keep a slot.
const handshakeTimeout = 30 * time.Second

// HandshakeListener serves TLS on ln with at most max handshakes running at
// once (max <= 0: no bound). A fleet storm opens thousands of new
// connections, each a full handshake that no door's queue sees (it happens
// before routing); beyond max they wait parked, not runnable, so requests
// on established connections (an admin console's keep-alive) keep their
// latency. Accept returns connections whose handshake is done; http.Server
// serves them as from ServeTLS (HTTP/2 offered as ServeTLS offers it).
func HandshakeListener(ln net.Listener, cfg *tls.Config, max int) net.Listener {
	cfg = cfg.Clone()
	if len(cfg.NextProtos) == 0 {
		cfg.NextProtos = []string{"h2", "http/1.1"}
	}
	if max <= 0 {
		return tls.NewListener(ln, cfg)
	}
	l := &handshakeListener{Listener: ln, cfg: cfg, slots: make(chan struct{}, max),
		ready: make(chan net.Conn), done: make(chan struct{})}
	go l.acceptLoop()
	return l
}

// ServeTLS is srv.ServeTLS(ln, "", "") with at most max TLS handshakes at
// once (HandshakeListener). srv.TLSConfig offers HTTP/2 and HTTP/1.1 as
// ServeTLS would: http.Server.Serve sets HTTP/2 up only when the config
// names it.
func ServeTLS(srv *http.Server, ln net.Listener, max int) error {
	if len(srv.TLSConfig.NextProtos) == 0 {
		srv.TLSConfig.NextProtos = []string{"h2", "http/1.1"}
	}
	return srv.Serve(HandshakeListener(ln, srv.TLSConfig, max))
}

type handshakeListener struct {
	net.Listener
	cfg   *tls.Config
	slots chan struct{}
	ready chan net.Conn
	done  chan struct{}
	once  sync.Once
	err   error // of the raw Accept, once done is closed by it
	mu    sync.Mutex
}

func (l *handshakeListener) acceptLoop() {
	var delay time.Duration
	for {
		raw, err := l.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() { // EMFILE and the like: back off as http.Server does
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(delay):
					continue
				case <-l.done:
					return
				}
			}
			l.mu.Lock()
			l.err = err
			l.mu.Unlock()
			l.close()
			return
		}
		delay = 0
		go l.handshake(raw)
	}
}

func (l *handshakeListener) handshake(raw net.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	select {
	case l.slots <- struct{}{}:
	case <-ctx.Done():
		raw.Close()
		return
	case <-l.done:
		raw.Close()
		return
	}
	tc := tls.Server(raw, l.cfg)
	err := tc.HandshakeContext(ctx)
	<-l.slots
	if err != nil {
		raw.Close()
		return
	}
	select {
	case l.ready <- tc:
	case <-l.done:
		tc.Close()
	}
}

func (l *handshakeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.err != nil {
			return nil, l.err
		}
		return nil, net.ErrClosed
	}
}

func (l *handshakeListener) close() { l.once.Do(func() { close(l.done) }) }

func (l *handshakeListener) Close() error {
	l.close()
	return l.Listener.Close()
}
