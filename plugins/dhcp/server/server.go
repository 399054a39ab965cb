// Package server is branchbox's DHCPv4 server: one plugin chain per site,
// built from the store's site records, listening on each directly attached
// site's interface and on a relay address, answering only while this node
// is the raft leader, and acknowledging only leases the store committed.
package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/plugins/dhcp/chain"
	"github.com/branchbox/branchbox/plugins/dhcp/leases"
)

// Options configure a Server. Zero durations take sensible defaults.
type Options struct {
	// RelayListen is the UDP address relayed requests arrive on, usually
	// "0.0.0.0:67"; empty serves directly attached sites only.
	RelayListen string
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
	// Health is told whether DHCP is serving, and why not.
	Health func(ok bool, detail string)

	OfferTTL      time.Duration // default 30s
	Quarantine    time.Duration // DECLINEd address out of use; default 10m
	CommitTimeout time.Duration // one lease commit; default 5s
	ExpireEvery   time.Duration // leader's expiry sweep; default 30s
	// MaxInFlight bounds the lease commits waiting at once, and the
	// RELEASEs and DECLINEs queued; past it requests are dropped. Default
	// 2048, half a second of commits at 4,000 leases/s: enough to ride out
	// a slow disk flush, short of answering requests long given up on.
	MaxInFlight int
	// Peer reports whether an address is another cluster member serving
	// the site (see chain.Env.Peer); nil on a single box.
	Peer func(site string, addr net.IP) bool
}

// Server is the DHCPv4 server.
type Server struct {
	store    Store
	opts     Options
	log      *slog.Logger
	m        *metrics
	registry *chain.Registry
	book     *leases.Book
	ctx      context.Context
	cancel   context.CancelFunc
	queue    chan packet  // RELEASE and DECLINE, for the workers
	pending  atomic.Int64 // lease commits not yet answered

	sites atomic.Pointer[siteTable]

	// Replaced in tests: how a site's own address is found, how sockets
	// are opened, and the ports replies go to.
	serverAddr func(cluster.Site, netip.Prefix) (net.IP, error)
	openConn   func(iface string, addr *net.UDPAddr) (*net.UDPConn, error)
	serverPort int
	clientPort int

	mu         sync.Mutex
	listeners  map[string]*listener // by interface; "" is the relay listener
	lastSites  []cluster.Site
	siteErrs   map[string]error
	leader     bool
	lastHealth string
}

type listener struct {
	iface string
	conn  *net.UDPConn
	io    udpIO
}

// New builds a server over the store. It does nothing until Run.
func New(store Store, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ExpireEvery <= 0 {
		opts.ExpireEvery = 30 * time.Second
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 2048
	}
	registry, err := chain.NewRegistry(Plugins...)
	if err != nil {
		panic(err) // the built-in list is fixed at compile time
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		opts.Logger.Error("dhcp metrics not registered", "err", err)
		m, _ = newMetrics(nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		store: store, opts: opts, log: opts.Logger.With("service", "dhcp"), m: m, registry: registry,
		ctx: ctx, cancel: cancel, queue: make(chan packet, opts.MaxInFlight),
		serverAddr: serverAddr, openConn: server4.NewIPv4UDPConn, serverPort: dhcpv4.ServerPort, clientPort: dhcpv4.ClientPort,
		listeners: map[string]*listener{}, siteErrs: map[string]error{},
	}
	s.book = leases.NewBook(ctx, store, leases.Config{OfferTTL: opts.OfferTTL, Quarantine: opts.Quarantine, CommitTimeout: opts.CommitTimeout})
	s.sites.Store(&siteTable{byIface: map[string]*site{}})
	return s
}

// Run serves until ctx is cancelled. It fails only when the relay
// listener cannot be opened; a site that cannot be served yet (interface
// missing, no address) is reported through Health and retried.
func (s *Server) Run(ctx context.Context) error {
	defer s.cancel()
	defer s.closeListeners()
	if s.opts.RelayListen != "" {
		addr, err := net.ResolveUDPAddr("udp4", s.opts.RelayListen)
		if err != nil {
			return fmt.Errorf("dhcp relay_listen %q: %w", s.opts.RelayListen, err)
		}
		if err := s.listen("", addr); err != nil {
			return fmt.Errorf("dhcp relay_listen %q: %w", s.opts.RelayListen, err)
		}
	}
	for range workers {
		go s.work(ctx)
	}
	changed, stop := s.store.WatchConfig()
	defer stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	expire := time.NewTicker(s.opts.ExpireEvery)
	defer expire.Stop()

	s.reconcile(true)
	dirty, retry := false, 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			// A config sync writes several sites at once; coalesce into the tick.
			dirty = true
		case <-tick.C:
			retry++
			s.reconcile(dirty || retry%20 == 0) // and every 5s, to retry broken sites
			dirty = false
		case <-expire.C:
			if s.store.IsLeader() {
				n, err := s.book.Expire(ctx)
				if err != nil {
					s.log.Warn("lease expiry sweep failed", "err", err)
				} else if n > 0 {
					s.m.expired.Add(float64(n))
					s.log.Info("expired leases reclaimed", "count", n)
				}
			}
		}
	}
}

// reconcile follows leadership and, when asked to, rebuilds the site
// chains and listeners from the store.
func (s *Server) reconcile(rebuild bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	leader := s.store.IsLeader()
	if leader && !s.leader {
		// Another node may have committed leases while we followed.
		s.book.Sync()
		s.log.Info("dhcp active: this node is the leader")
	} else if !leader && s.leader {
		s.log.Info("dhcp standby: this node is not the leader")
	}
	s.leader = leader
	sites := s.store.Sites()
	if rebuild && (!reflect.DeepEqual(sites, s.lastSites) || len(s.siteErrs) > 0) {
		s.build(sites)
		s.lastSites = sites
	}
	s.reportHealth()
}

func (s *Server) build(recs []cluster.Site) {
	t := &siteTable{byIface: map[string]*site{}}
	clear(s.siteErrs)
	keep := map[string]bool{}
	for _, rec := range recs {
		keep[rec.Name] = true
		if rec.Interface == "" && !rec.Relay {
			continue // a site with no DHCP scope (DNS/provisioning only)
		}
		st, err := s.buildSite(rec)
		if err == nil && !rec.Relay {
			if other, dup := t.byIface[rec.Interface]; dup {
				err = fmt.Errorf("interface %q already serves site %q", rec.Interface, other.rec.Name)
			} else {
				err = s.ensureListener(rec.Interface)
			}
		}
		if err != nil {
			s.siteErrs[rec.Name] = err
			s.log.Warn("dhcp site not served", "site", rec.Name, "err", err)
			continue
		}
		t.all = append(t.all, st)
		if rec.Relay {
			t.relayed = append(t.relayed, st)
		} else {
			t.byIface[rec.Interface] = st
		}
		s.log.Info("dhcp site ready", "site", rec.Name, "subnet", st.subnet, "relay", rec.Relay,
			"interface", rec.Interface, "plugins", strings.Join(st.chain.Names(), ","))
	}
	for iface, l := range s.listeners {
		if iface != "" && t.byIface[iface] == nil {
			l.conn.Close()
			delete(s.listeners, iface)
		}
	}
	s.book.Retain(keep)
	s.sites.Store(t)
}

func (s *Server) buildSite(rec cluster.Site) (*site, error) {
	subnet, err := netip.ParsePrefix(rec.Subnet)
	if err != nil || !subnet.Addr().Is4() {
		return nil, fmt.Errorf("subnet %q is not an IPv4 prefix", rec.Subnet)
	}
	subnet = subnet.Masked()
	ip, err := s.serverAddr(rec, subnet)
	if err != nil {
		return nil, err
	}
	c, err := s.registry.Build(chain.Env{Site: rec, Subnet: subnet, ServerIP: ip, Peer: s.opts.Peer, Leases: s.book, Log: s.log}, Order...)
	if err != nil {
		return nil, err
	}
	return &site{rec: rec, subnet: subnet, chain: c, requests: s.m.siteRequests.WithLabelValues(rec.Name)}, nil
}

func (s *Server) reportHealth() {
	ok, detail := true, ""
	var served []string
	for _, st := range s.sites.Load().all {
		served = append(served, st.rec.Name)
	}
	var broken []string
	for name, err := range s.siteErrs {
		broken = append(broken, fmt.Sprintf("site %s: %v", name, err))
	}
	sort.Strings(broken)
	switch {
	case len(broken) > 0:
		ok, detail = false, strings.Join(broken, "; ")
	case !s.leader:
		detail = fmt.Sprintf("standby (not the leader), %d sites", len(served))
	default:
		detail = fmt.Sprintf("serving %d sites: %s", len(served), strings.Join(served, ", "))
	}
	key := fmt.Sprint(ok, detail)
	if key == s.lastHealth || s.opts.Health == nil {
		return
	}
	s.lastHealth = key
	s.opts.Health(ok, detail)
}

func (s *Server) ensureListener(iface string) error {
	if _, ok := s.listeners[iface]; ok {
		return nil
	}
	return s.listen(iface, &net.UDPAddr{Port: s.serverPort})
}

// listen opens a socket, bound to iface when set, and starts reading it.
// The caller holds s.mu or is Run before the loop.
func (s *Server) listen(iface string, addr *net.UDPAddr) error {
	conn, err := s.openConn(iface, addr)
	if err != nil {
		return err
	}
	growReceiveBuffer(conn)
	uio, err := newUDPIO(conn)
	if err != nil {
		conn.Close()
		return err
	}
	l := &listener{iface: iface, conn: conn, io: uio}
	s.listeners[iface] = l
	go s.read(l)
	return nil
}

// receiveBuffer absorbs a burst of requests (a building powering up, a
// benchmark) while commits are in flight; the kernel default of about
// 200 KiB holds only a few hundred packets. It is kept small enough that
// an overloaded server drops rather than answers requests long given up.
const receiveBuffer = 1 << 20

// staleAfter is how long a queued RELEASE or DECLINE stays worth
// handling: a client that sent it has long moved on.
const staleAfter = time.Second

// workers handle RELEASE and DECLINE, which wait for their commit. They
// are rare (a client leaving, an address conflict); REQUESTs, the bulk of
// commits, never hold a goroutine while they wait.
const workers = 16

// growReceiveBuffer raises the socket's receive buffer, past rmem_max when
// the process may (CAP_NET_ADMIN), else as far as rmem_max allows.
func growReceiveBuffer(conn *net.UDPConn) {
	raw, err := conn.SyscallConn()
	if err == nil {
		var serr error
		err = raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, receiveBuffer)
		})
		if err == nil && serr == nil {
			return
		}
	}
	conn.SetReadBuffer(receiveBuffer)
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for iface, l := range s.listeners {
		l.conn.Close()
		delete(s.listeners, iface)
	}
}

// packet is one datagram being handled.
type packet struct {
	l    *listener
	data []byte
	peer netip.AddrPort
	at   time.Time
}

// read handles what it receives itself, REQUESTs included: a REQUEST's
// commit is queued for the next raft batch and its ACK is sent by the
// goroutine that committed it, so reading never waits and no goroutine is
// parked per lease. Only RELEASE and DECLINE, which wait for their commit
// and answer nothing, go to the workers. Past MaxInFlight commits waiting,
// new requests are dropped, what a flood deserves; past half of it new
// DISCOVERs are shed first: a REQUEST finishes an exchange already
// paid for, a DISCOVER only starts one.
func (s *Server) read(l *listener) {
	buf := make([]byte, 4096)
	for {
		n, peer, err := l.io.readFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("dhcp read failed", "interface", l.iface, "err", err)
			continue
		}
		limit := int64(s.opts.MaxInFlight)
		switch mt := peekType(buf[:n]); {
		case mt == dhcpv4.MessageTypeRelease || mt == dhcpv4.MessageTypeDecline:
			select {
			case s.queue <- packet{l: l, data: bytes.Clone(buf[:n]), peer: peer, at: time.Now()}:
			default:
				s.m.dropped.WithLabelValues(dropOverload).Inc()
			}
		case s.pending.Load() >= limit, mt == dhcpv4.MessageTypeDiscover && s.pending.Load() > limit/2:
			s.m.dropped.WithLabelValues(dropOverload).Inc()
		default:
			// The datagram is parsed before serve returns; nothing keeps buf.
			s.serve(packet{l: l, data: buf[:n], peer: peer, at: time.Now()})
		}
	}
}

// work handles queued RELEASEs and DECLINEs.
func (s *Server) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-s.queue:
			if time.Since(p.at) > staleAfter {
				s.m.dropped.WithLabelValues(dropStale).Inc()
				continue
			}
			s.serve(p)
		}
	}
}

func (s *Server) serve(p packet) {
	s.m.inFlight.Inc()
	s.handle(p.l.iface, p.data, func(reply *dhcpv4.DHCPv4, dst *net.UDPAddr) {
		defer s.m.inFlight.Dec()
		if reply == nil {
			return
		}
		if err := p.l.io.writeTo(reply.ToBytes(), dst); err != nil {
			s.m.dropped.WithLabelValues(dropSendError).Inc()
			s.log.Debug("dhcp send failed", "to", dst, "peer", p.peer, "err", err)
			return
		}
		m := s.m.of(reply.MessageType())
		m.replies.Inc()
		m.latency.Observe(time.Since(p.at).Seconds())
	})
}
