package wsman

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/branchbox/branchbox/tests/amtsim/device"
)

// TLSConfig is the device's 16993 TLS configuration: its current
// self-signed certificate, the profile's versions and suites, and — while
// remote configuration is pending — a mandatory client chain checked with
// the firmware rules.
func TLSConfig(dev *device.Device) *tls.Config {
	return &tls.Config{
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			p := dev.Profile()
			c := &tls.Config{
				Certificates: []tls.Certificate{*dev.TLSCertificate()},
				MinVersion:   p.TLSMinVersion,
				MaxVersion:   p.TLSMaxVersion,
				CipherSuites: p.CipherSuites,
			}
			if dev.NeedsClientChain() {
				c.ClientAuth = tls.RequireAnyClientCert
				c.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
					return dev.CheckClientChain(raw)
				}
			}
			return c, nil
		},
	}
}

// gatedListener drops connections while up() is false (window closed, not
// provisioned, rebooting).
type gatedListener struct {
	net.Listener
	dev *device.Device
	up  func() bool
}

func (l gatedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.up() {
			return c, nil
		}
		if tcp, ok := c.(*net.TCPConn); ok {
			_ = tcp.SetLinger(0)
		}
		_ = c.Close()
		l.dev.Log().Debug("remote interface down, connection reset", "peer", c.RemoteAddr().String())
	}
}

// ServeRemote runs the TLS WS-Man endpoint (port 16993) on ln until ctx ends.
func ServeRemote(ctx context.Context, dev *device.Device, ln net.Listener) error {
	gated := gatedListener{Listener: ln, dev: dev, up: dev.RemoteReachable}
	return serve(ctx, dev, newHandshakeListener(gated, dev, TLSConfig(dev)), device.Remote)
}

// ServeRemoteHTTP runs the plain-HTTP remote endpoint (port 16992): it is up
// only once the device is provisioned, as AMT without TLS configured offers
// its management interface there, and closes when TLS is enabled without
// AcceptNonSecureConnections.
func ServeRemoteHTTP(ctx context.Context, dev *device.Device, ln net.Listener) error {
	up := func() bool {
		st, _ := dev.State()
		return st == device.PostProvisioning && dev.RemoteReachable() && dev.PlainRemoteAllowed()
	}
	return serve(ctx, dev, gatedListener{Listener: ln, dev: dev, up: up}, device.Remote)
}

// ServeLocal runs the plain-HTTP host-side endpoint (LMS, port 16992) on ln.
func ServeLocal(ctx context.Context, dev *device.Device, ln net.Listener) error {
	return serve(ctx, dev, ln, device.Local)
}

func serve(ctx context.Context, dev *device.Device, ln net.Listener, t device.Transport) error {
	srv := &http.Server{
		Handler:           NewHandler(dev, t),
		ConnContext:       ConnContext,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// Handshake failures are already logged by the device with the rule.
		ErrorLog: slog.NewLogLogger(dev.Log().Handler(), slog.LevelDebug),
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if srv.Shutdown(sctx) != nil {
				// Connections stuck mid-handshake do not count as idle.
				_ = srv.Close()
			}
		case <-done:
		}
	}()
	err := srv.Serve(ln)
	close(done)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
