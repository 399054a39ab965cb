package server

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/plugins/dhcp/chain"
)

// leaderStore lets a test take leadership away from the in-memory store,
// or make lease commits fail as they do without a quorum.
type leaderStore struct {
	*cluster.Store
	follower    atomic.Bool
	failCommits atomic.Bool
}

func (l *leaderStore) IsLeader() bool { return !l.follower.Load() }

func (l *leaderStore) ApplyLease(c cluster.LeaseCAS, deadline time.Time, done func(error)) {
	if l.failCommits.Load() {
		done(errors.New("no quorum"))
		return
	}
	l.Store.ApplyLease(c, deadline, done)
}

var (
	directSite = cluster.Site{
		Name: "b1", Domain: "branch1.example.com", Interface: "eth-b1", Subnet: "10.1.0.0/24",
		RangeStart: "10.1.0.100", RangeEnd: "10.1.0.199", Router: "10.1.0.1", LeaseTime: time.Hour,
		Reservations: []cluster.Reservation{{MAC: "02:00:00:00:00:aa", IP: "10.1.0.50", Hostname: "printer"}},
	}
	relaySite = cluster.Site{
		Name: "b2", Domain: "branch2.example.com", Relay: true, Subnet: "10.2.0.0/24",
		RangeStart: "10.2.0.100", RangeEnd: "10.2.0.199", Router: "10.2.0.1", LeaseTime: 2 * time.Hour,
	}
)

func putSites(t testing.TB, st *cluster.Store, sites ...cluster.Site) {
	t.Helper()
	for _, s := range sites {
		if err := st.Apply(context.Background(), cluster.PutSite{Site: s, Time: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
}

// newTestServer builds a server whose sites are resolved without touching
// real interfaces: the appliance is .2 on every subnet.
func newTestServer(t testing.TB, reg prometheus.Registerer) (*Server, *leaderStore) {
	t.Helper()
	store := &leaderStore{Store: cluster.NewMemory()}
	putSites(t, store.Store, directSite, relaySite)
	s := New(store, Options{Registerer: reg})
	s.serverAddr = func(_ cluster.Site, p netip.Prefix) (net.IP, error) {
		a := p.Masked().Addr().Next().Next()
		return net.IP(a.AsSlice()), nil
	}
	s.openConn = func(string, *net.UDPAddr) (*net.UDPConn, error) {
		return net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	}
	s.mu.Lock()
	s.build(store.Sites())
	s.mu.Unlock()
	t.Cleanup(func() { s.cancel(); s.closeListeners() })
	return s, store
}

func hw(n byte) net.HardwareAddr { return net.HardwareAddr{2, 0, 0, 0, 0, n} }

func msg(t testing.TB, mods ...dhcpv4.Modifier) []byte {
	t.Helper()
	m, err := dhcpv4.New(mods...)
	if err != nil {
		t.Fatal(err)
	}
	return m.ToBytes()
}

func discoverPkt(t testing.TB, mac net.HardwareAddr, giaddr net.IP) []byte {
	mods := []dhcpv4.Modifier{dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover)}
	if giaddr != nil {
		mods = append(mods, dhcpv4.WithGatewayIP(giaddr))
	}
	return msg(t, mods...)
}

func requestPkt(t testing.TB, mac net.HardwareAddr, giaddr, ip, serverID net.IP) []byte {
	mods := []dhcpv4.Modifier{dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip))}
	if giaddr != nil {
		mods = append(mods, dhcpv4.WithGatewayIP(giaddr))
	}
	if serverID != nil {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverID)))
	}
	return msg(t, mods...)
}

func TestDirectDORA(t *testing.T) {
	s, store := newTestServer(t, nil)
	offer, dst := s.answer("eth-b1", discoverPkt(t, hw(1), nil))
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("no OFFER: %v", offer)
	}
	if dst.String() != "255.255.255.255:68" {
		t.Fatalf("OFFER sent to %s", dst)
	}
	if _, ok := store.Lease(offer.YourIPAddr.String()); ok {
		t.Fatal("an OFFER must not commit a lease")
	}
	ack, _ := s.answer("eth-b1", requestPkt(t, hw(1), nil, offer.YourIPAddr, offer.ServerIdentifier()))
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("no ACK: %v", ack)
	}
	ack, _ = dhcpv4.FromBytes(ack.ToBytes())
	checks := []struct{ what, got, want string }{
		{"yiaddr", ack.YourIPAddr.String(), offer.YourIPAddr.String()},
		{"option 15", ack.DomainName(), "branch1.example.com"},
		{"option 6", net.IP(ack.Options.Get(dhcpv4.OptionDomainNameServer)).String(), "10.1.0.2"},
		{"option 3", ack.Router()[0].String(), "10.1.0.1"},
		{"option 1", net.IP(ack.SubnetMask()).String(), "255.255.255.0"},
		{"option 51", ack.IPAddressLeaseTime(0).String(), "1h0m0s"},
		{"option 54", ack.ServerIdentifier().String(), "10.1.0.2"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %s, want %s", c.what, c.got, c.want)
		}
	}
	if l, ok := store.Lease(ack.YourIPAddr.String()); !ok || l.Site != "b1" {
		t.Fatalf("ACKed lease not committed: %+v", l)
	}
}

// What a REQUEST's commit decides: another client's address is refused
// with a NAK, whether the allocator knew (checked before committing) or
// only the store did (the compare-and-set lost); a commit that fails is
// not answered, so the client retries, and is counted.
func TestCommitOutcomes(t *testing.T) {
	s, store := newTestServer(t, nil)
	offer, _ := s.answer("eth-b1", discoverPkt(t, hw(1), nil))
	if ack, _ := s.answer("eth-b1", requestPkt(t, hw(1), nil, offer.YourIPAddr, nil)); ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("first client: %v", ack)
	}
	taken := cluster.Lease{IP: "10.1.0.160", ClientID: "elsewhere", Site: "b1", State: cluster.LeaseBound, Expires: time.Now().Add(time.Hour)}
	if err := store.Apply(context.Background(), cluster.LeaseCAS{Lease: taken, Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for _, ip := range []net.IP{offer.YourIPAddr, net.IPv4(10, 1, 0, 160)} {
		nak, dst := s.answer("eth-b1", requestPkt(t, hw(2), nil, ip, nil))
		if nak == nil || nak.MessageType() != dhcpv4.MessageTypeNak || dst.String() != "255.255.255.255:68" {
			t.Fatalf("request for %s held by another client: %v to %v", ip, nak, dst)
		}
		if l, _ := store.Lease(ip.String()); l.ClientID == chain.ClientID(mustParse(t, requestPkt(t, hw(2), nil, ip, nil))) {
			t.Fatalf("%s went to the second client", ip)
		}
	}
	store.failCommits.Store(true)
	if r, _ := s.answer("eth-b1", requestPkt(t, hw(3), nil, net.IPv4(10, 1, 0, 170), nil)); r != nil {
		t.Fatalf("a failed commit was answered: %v", r)
	}
	if got := counter(t, s.m.dropped.WithLabelValues(dropCommitFailed)); got != 1 {
		t.Fatalf("commit_failed drops = %v, want 1", got)
	}
	if _, ok := store.Lease("10.1.0.170"); ok {
		t.Fatal("a failed commit left a lease")
	}
	if n := s.pending.Load(); n != 0 {
		t.Fatalf("%d commits still counted as pending after every outcome", n)
	}
}

func mustParse(t *testing.T, pkt []byte) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.FromBytes(pkt)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRelayedDORAPicksSiteByGiaddr(t *testing.T) {
	s, store := newTestServer(t, nil)
	relay := net.IPv4(10, 2, 0, 1)
	offer, dst := s.answer("", discoverPkt(t, hw(1), relay))
	if offer == nil {
		t.Fatal("no OFFER")
	}
	if dst.String() != "10.2.0.1:67" {
		t.Fatalf("OFFER sent to %s, want the relay", dst)
	}
	if !netip.MustParsePrefix("10.2.0.0/24").Contains(netip.MustParseAddr(offer.YourIPAddr.String())) {
		t.Fatalf("offered %s from the wrong site", offer.YourIPAddr)
	}
	if offer.DomainName() != "branch2.example.com" {
		t.Fatalf("option 15 = %q", offer.DomainName())
	}
	ack, _ := s.answer("", requestPkt(t, hw(1), relay, offer.YourIPAddr, offer.ServerIdentifier()))
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("no ACK: %v", ack)
	}
	if l, _ := store.Lease(ack.YourIPAddr.String()); l.Site != "b2" {
		t.Fatalf("lease site %q", l.Site)
	}
	// The client renews by unicast, without the relay: site by ciaddr.
	renew := msg(t, dhcpv4.WithHwAddr(hw(1)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithClientIP(ack.YourIPAddr))
	again, dst := s.answer("", renew)
	if again == nil || !again.YourIPAddr.Equal(ack.YourIPAddr) || dst.Port != 68 || !dst.IP.Equal(ack.YourIPAddr) {
		t.Fatalf("renewal: %v to %v", again, dst)
	}
}

func TestAnswers(t *testing.T) {
	s, _ := newTestServer(t, nil)
	inform := msg(t, dhcpv4.WithHwAddr(hw(9)), dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithClientIP(net.IPv4(10, 1, 0, 77)))
	tests := []struct {
		name    string
		iface   string
		pkt     []byte
		want    dhcpv4.MessageType // 0: no reply
		wantDst string
	}{
		{"reservation", "eth-b1", discoverPkt(t, hw(0xaa), nil), dhcpv4.MessageTypeOffer, "255.255.255.255:68"},
		{"request outside subnet", "eth-b1", requestPkt(t, hw(3), nil, net.IPv4(10, 9, 0, 1), nil), dhcpv4.MessageTypeNak, "255.255.255.255:68"},
		{"relayed NAK goes to the relay", "", requestPkt(t, hw(3), net.IPv4(10, 2, 0, 1), net.IPv4(10, 9, 0, 1), nil), dhcpv4.MessageTypeNak, "10.2.0.1:67"},
		{"request for another server", "eth-b1", requestPkt(t, hw(3), nil, net.IPv4(10, 1, 0, 120), net.IPv4(10, 1, 0, 9)), 0, ""},
		{"inform", "eth-b1", inform, dhcpv4.MessageTypeAck, "10.1.0.77:68"},
		{"unknown interface", "eth-x", discoverPkt(t, hw(4), nil), 0, ""},
		{"broadcast seen by the relay listener", "", discoverPkt(t, hw(4), nil), 0, ""},
		{"giaddr of no site", "", discoverPkt(t, hw(4), net.IPv4(192, 0, 2, 1)), 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reply, dst := s.answer(tt.iface, tt.pkt)
			if tt.want == 0 {
				if reply != nil {
					t.Fatalf("unexpected %s", reply.MessageType())
				}
				return
			}
			if reply == nil || reply.MessageType() != tt.want {
				t.Fatalf("got %v, want %s", reply, tt.want)
			}
			if dst.String() != tt.wantDst {
				t.Fatalf("sent to %s, want %s", dst, tt.wantDst)
			}
		})
	}
	reserved, _ := s.answer("eth-b1", discoverPkt(t, hw(0xaa), nil))
	if reserved.YourIPAddr.String() != "10.1.0.50" || reserved.HostName() != "printer" {
		t.Fatalf("reservation offered %s %q", reserved.YourIPAddr, reserved.HostName())
	}
	ack, _ := s.answer("eth-b1", inform)
	if ack.Options.Has(dhcpv4.OptionIPAddressLeaseTime) || chaddrSet(ack.YourIPAddr) {
		t.Fatal("an INFORM reply must carry no lease")
	}
}

// TestReplyHeader checks what a reply must echo from its request (RFC 2131
// table 3, RFC 3046 for option 82, RFC 6842 for option 61).
func TestReplyHeader(t *testing.T) {
	s, _ := newTestServer(t, nil)
	d, err := dhcpv4.FromBytes(discoverPkt(t, hw(7), net.IPv4(10, 2, 0, 1)))
	if err != nil {
		t.Fatal(err)
	}
	d.Flags = 0x8000
	d.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionRelayAgentInformation, []byte{1, 3, 'p', '1', '7'}))
	d.UpdateOption(dhcpv4.OptClientIdentifier([]byte{1, 2, 0, 0, 0, 0, 7}))
	offer, _ := s.answer("", d.ToBytes())
	if offer == nil {
		t.Fatal("no OFFER")
	}
	switch {
	case offer.OpCode != dhcpv4.OpcodeBootReply, offer.TransactionID != d.TransactionID, offer.Flags != d.Flags,
		offer.ClientHWAddr.String() != d.ClientHWAddr.String(), !offer.GatewayIPAddr.Equal(d.GatewayIPAddr):
		t.Fatalf("header not echoed: op %v xid %v flags %#x chaddr %s giaddr %s", offer.OpCode, offer.TransactionID, offer.Flags, offer.ClientHWAddr, offer.GatewayIPAddr)
	case string(offer.Options.Get(dhcpv4.OptionRelayAgentInformation)) != "\x01\x03p17":
		t.Fatalf("option 82 = %q", offer.Options.Get(dhcpv4.OptionRelayAgentInformation))
	case string(offer.Options.Get(dhcpv4.OptionClientIdentifier)) != "\x01\x02\x00\x00\x00\x00\x07":
		t.Fatalf("option 61 = %q", offer.Options.Get(dhcpv4.OptionClientIdentifier))
	}
}

func chaddrSet(ip net.IP) bool { return ip != nil && !ip.IsUnspecified() }

func TestBadPacketsAreDroppedAndCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, _ := newTestServer(t, reg)
	good := discoverPkt(t, hw(1), nil)
	reply := msg(t, dhcpv4.WithHwAddr(hw(1)), dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer))
	reply[0] = byte(dhcpv4.OpcodeBootReply)
	longHW := append([]byte(nil), good...)
	longHW[2] = 16
	noType := msg(t, dhcpv4.WithHwAddr(hw(1)))
	tests := []struct {
		name, reason string
		pkt          []byte
	}{
		{"empty", dropMalformed, nil},
		{"truncated", dropMalformed, good[:100]},
		{"bad cookie", dropMalformed, append(append([]byte(nil), good[:236]...), 1, 2, 3, 4, 255)},
		{"reply opcode", dropWrongOp, reply},
		{"odd hardware length", dropHWType, longHW},
		{"no message type", dropMsgType, noType},
		{"server message", dropMsgType, msg(t, dhcpv4.WithHwAddr(hw(1)), dhcpv4.WithMessageType(dhcpv4.MessageTypeAck))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := counter(t, s.m.dropped.WithLabelValues(tt.reason))
			if r, _ := s.answer("eth-b1", tt.pkt); r != nil {
				t.Fatalf("answered a bad packet with %s", r.MessageType())
			}
			if got := counter(t, s.m.dropped.WithLabelValues(tt.reason)) - before; got != 1 {
				t.Fatalf("dropped{reason=%s} grew by %v", tt.reason, got)
			}
		})
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	registered := false
	for _, f := range families {
		registered = registered || f.GetName() == "branchbox_dhcp_dropped_total"
	}
	if !registered {
		t.Fatal("metrics not registered")
	}
}

func TestFollowerStaysSilent(t *testing.T) {
	s, store := newTestServer(t, nil)
	store.follower.Store(true)
	if r, _ := s.answer("eth-b1", discoverPkt(t, hw(1), nil)); r != nil {
		t.Fatal("a follower answered DHCP")
	}
	if got := counter(t, s.m.dropped.WithLabelValues(dropNotLeader)); got != 1 {
		t.Fatalf("not_leader drops = %v", got)
	}
}

func counter(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestPeekType(t *testing.T) {
	tests := []struct {
		name string
		pkt  []byte
		want dhcpv4.MessageType
	}{
		{"discover", discoverPkt(t, hw(1), nil), dhcpv4.MessageTypeDiscover},
		{"request", requestPkt(t, hw(1), nil, net.IPv4(10, 1, 0, 100), nil), dhcpv4.MessageTypeRequest},
		{"truncated", discoverPkt(t, hw(1), nil)[:241], 0},
		{"empty", nil, 0},
	}
	for _, tt := range tests {
		if got := peekType(tt.pkt); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

// answer runs one datagram through handle and waits for its reply, the
// lease commit included.
func (s *Server) answer(iface string, pkt []byte) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	type out struct {
		reply *dhcpv4.DHCPv4
		dst   *net.UDPAddr
	}
	ch := make(chan out, 1)
	s.handle(iface, pkt, func(r *dhcpv4.DHCPv4, dst *net.UDPAddr) { ch <- out{r, dst} })
	o := <-ch
	return o.reply, o.dst
}
