package wsman

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/branchbox/branchbox/tests/amtsim/device"
	"github.com/branchbox/branchbox/tests/amtsim/firmware"
)

// handshakeTimeout bounds a TLS handshake, as firmware drops a silent peer.
const handshakeTimeout = 30 * time.Second

// handshakeListener completes each TLS handshake before the HTTP server sees
// the connection. The chain rules run inside the handshake
// (VerifyPeerCertificate), but the proof that the client holds the leaf's
// key — its CertificateVerify — is checked by crypto/tls after them; only
// here can a session refused for that be recorded with its rule, and an
// accepted one be recorded once it really is.
type handshakeListener struct {
	inner net.Listener
	dev   *device.Device
	conf  *tls.Config
	conns chan net.Conn

	once sync.Once
	done chan struct{}
	err  error // why the inner listener stopped; read after done closes
}

func newHandshakeListener(inner net.Listener, dev *device.Device, conf *tls.Config) *handshakeListener {
	l := &handshakeListener{inner: inner, dev: dev, conf: conf, conns: make(chan net.Conn), done: make(chan struct{})}
	go l.acceptLoop()
	return l
}

func (l *handshakeListener) acceptLoop() {
	for {
		c, err := l.inner.Accept()
		if err != nil {
			l.stop(err)
			return
		}
		go l.handshake(c)
	}
}

func (l *handshakeListener) stop(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.done)
	})
}

func (l *handshakeListener) handshake(c net.Conn) {
	tc := tls.Server(c, l.conf)
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		l.refused(err)
		_ = tc.Close()
		return
	}
	if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
		l.dev.AcceptClient(certs[0], len(certs))
	}
	select {
	case l.conns <- tc:
	case <-l.done:
		_ = tc.Close()
	}
}

// refused records a failed handshake. Chain-rule failures were recorded
// by the device as they happened; a client signature that does not verify
// means the chain was presented without its leaf's private key.
func (l *handshakeListener) refused(err error) {
	if _, ok := firmware.FailedRule(err); ok {
		return
	}
	if strings.HasPrefix(err.Error(), "tls: invalid signature by the client certificate") {
		l.dev.RefuseClient(firmware.Fail(firmware.RuleKeyMatch,
			"the client's CertificateVerify does not verify with the leaf's public key: the presenter does not hold the leaf's private key"))
		return
	}
	l.dev.Log().Debug("TLS handshake failed", "err", err)
}

func (l *handshakeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

func (l *handshakeListener) Close() error {
	err := l.inner.Close()
	l.stop(net.ErrClosed)
	return err
}

func (l *handshakeListener) Addr() net.Addr { return l.inner.Addr() }
