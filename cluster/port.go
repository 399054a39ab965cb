package cluster

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// One TCP port carries raft and the members' own RPC. Every connection is
// TLS; its first byte after the handshake says what it is for. Raft and
// RPC need a certificate from the cluster CA; the join byte is the one
// door open to a newcomer without one, and it admits only a valid token.
const (
	connRaft byte = 'R'
	connRPC  byte = 'C'
	connJoin byte = 'J'

	handshakeTimeout = 10 * time.Second
	rpcTimeout       = 10 * time.Second
)

var (
	errPortClosed   = errors.New("cluster port closed")
	errWrongCluster = errors.New("the member's CA is not the one named in the join token")
)

// clusterPort is the listener side of the cluster port.
type clusterPort struct {
	ln        net.Listener
	advertise net.Addr
	tls       *tls.Config
	raftConns chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
	log       *slog.Logger

	// Set before serve starts.
	rpc  func(peer peerIdentity, req rpcRequest) rpcResponse
	join func(req joinRequest) joinResponse
}

func serverTLS(p *pki) *tls.Config {
	cert := p.cert
	// The CA travels with the member certificate so a newcomer can match
	// it against the hash in its join token.
	cert.Certificate = append(append([][]byte(nil), cert.Certificate...), p.caCert.Raw)
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    p.pool(),
		ClientAuth:   tls.VerifyClientCertIfGiven,
	}
}

func clientTLS(p *pki) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{p.cert},
		RootCAs:      p.pool(),
		ServerName:   clusterServerName,
	}
}

// joinTLS verifies a cluster it holds no certificate of yet: the chain
// must lead to a CA whose SHA-256 is the one in the join token.
func joinTLS(caHash []byte) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by the pinned-CA check below
		VerifyConnection: func(cs tls.ConnectionState) error {
			var ca *x509.Certificate
			for _, c := range cs.PeerCertificates {
				if sum := sha256.Sum256(c.Raw); string(sum[:]) == string(caHash) {
					ca = c
				}
			}
			if ca == nil || len(cs.PeerCertificates) == 0 {
				return errWrongCluster
			}
			pool := x509.NewCertPool()
			pool.AddCert(ca)
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, DNSName: clusterServerName})
			return err
		},
	}
}

func listenClusterPort(bind string, p *pki, log *slog.Logger) (*clusterPort, error) {
	addr, err := net.ResolveTCPAddr("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("cluster address %q: %w", bind, err)
	}
	if addr.IP == nil || addr.IP.IsUnspecified() {
		return nil, fmt.Errorf("cluster address %q: needs the address other members reach this one at, not a wildcard", bind)
	}
	ln, err := net.ListenTCP("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cluster port: %w", err)
	}
	return &clusterPort{
		ln: ln, advertise: ln.Addr(), tls: serverTLS(p), log: log,
		raftConns: make(chan net.Conn, 16), closed: make(chan struct{}),
	}, nil
}

func (cp *clusterPort) serve() {
	for {
		c, err := cp.ln.Accept()
		if err != nil {
			select {
			case <-cp.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			cp.log.Error("cluster port accept", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go cp.handle(c)
	}
}

func (cp *clusterPort) handle(raw net.Conn) {
	c := tls.Server(raw, cp.tls)
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	var kind [1]byte
	if err := c.Handshake(); err != nil {
		cp.log.Warn("cluster port: refused a connection", "from", raw.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	if _, err := c.Read(kind[:]); err != nil {
		c.Close()
		return
	}
	peer, verified := identityOf(c.ConnectionState())
	if kind[0] != connJoin && !verified {
		cp.log.Warn("cluster port: refused a connection without a member certificate", "from", raw.RemoteAddr().String())
		c.Close()
		return
	}
	switch kind[0] {
	case connRaft:
		c.SetDeadline(time.Time{})
		select {
		case cp.raftConns <- c:
		case <-cp.closed:
			c.Close()
		}
	case connRPC:
		defer c.Close()
		var req rpcRequest
		if err := json.NewDecoder(bufio.NewReader(c)).Decode(&req); err != nil {
			return
		}
		c.SetDeadline(time.Now().Add(rpcTimeout + time.Second))
		json.NewEncoder(c).Encode(cp.rpc(peer, req))
	case connJoin:
		defer c.Close()
		var req joinRequest
		if err := json.NewDecoder(bufio.NewReader(c)).Decode(&req); err != nil {
			return
		}
		c.SetDeadline(time.Now().Add(rpcTimeout + time.Second))
		resp := cp.join(req)
		if resp.Error != "" {
			cp.log.Warn("cluster port: join refused", "from", raw.RemoteAddr().String(), "id", req.ID, "err", resp.Error)
		}
		json.NewEncoder(c).Encode(resp)
	default:
		c.Close()
	}
}

func (cp *clusterPort) Close() error {
	cp.closeOnce.Do(func() {
		close(cp.closed)
		cp.ln.Close()
	})
	return nil
}

// streamLayer hands raft its connections on the shared port.
type streamLayer struct {
	port   *clusterPort
	client *tls.Config
}

var _ raft.StreamLayer = streamLayer{}

func (s streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.port.raftConns:
		return c, nil
	case <-s.port.closed:
		return nil, errPortClosed
	}
}

func (s streamLayer) Close() error   { return s.port.Close() }
func (s streamLayer) Addr() net.Addr { return s.port.advertise }

func (s streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return dialMember(string(addr), connRaft, s.client, timeout)
}

func dialMember(addr string, kind byte, cfg *tls.Config, timeout time.Duration) (*tls.Conn, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: cfg}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := nc.(*tls.Conn)
	if _, err := c.Write([]byte{kind}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// call sends one request on a fresh connection and decodes one answer.
func call(addr string, kind byte, cfg *tls.Config, req, resp any) error {
	return callTimeout(addr, kind, cfg, req, resp, rpcTimeout+2*time.Second)
}

// callTimeout is call bounded by timeout, dial included.
func callTimeout(addr string, kind byte, cfg *tls.Config, req, resp any, timeout time.Duration) error {
	c, err := dialMember(addr, kind, cfg, min(timeout, 5*time.Second))
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return err
	}
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(resp); err != nil {
		return fmt.Errorf("member %s: %w", addr, err)
	}
	return nil
}
