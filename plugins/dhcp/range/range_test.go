package rangeplugin

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/plugins/dhcp/chain"
	"github.com/branchbox/branchbox/plugins/dhcp/leases"
)

type fixture struct {
	t     *testing.T
	store *cluster.Store
	now   time.Time
	h     chain.Handler
	book  *leases.Book
}

func newFixture(t *testing.T, site cluster.Site) *fixture {
	t.Helper()
	f := &fixture{t: t, store: cluster.NewMemory(), now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	book := leases.NewBook(context.Background(), f.store, leases.Config{Now: func() time.Time { return f.now }})
	h, err := setup(chain.Env{Site: site, Subnet: netip.MustParsePrefix(site.Subnet), ServerIP: net.IPv4(10, 1, 0, 2), Leases: book})
	if err != nil {
		t.Fatal(err)
	}
	f.h, f.book = h, book
	return f
}

func site() cluster.Site {
	return cluster.Site{Name: "b1", Subnet: "10.1.0.0/24", RangeStart: "10.1.0.1", RangeEnd: "10.1.0.20", Router: "10.1.0.1", LeaseTime: time.Hour}
}

func mac(n int) net.HardwareAddr { return net.HardwareAddr{0x02, 0, 0, 0, byte(n >> 8), byte(n)} }

func (f *fixture) run(req *dhcpv4.DHCPv4, reserved string) *dhcpv4.DHCPv4 {
	resp, err := dhcpv4.NewReplyFromRequest(req)
	if err != nil {
		f.t.Fatal(err)
	}
	if reserved != "" {
		resp.YourIPAddr = net.ParseIP(reserved).To4()
	}
	out, _ := f.h(req, resp)
	if out == nil || req.MessageType() != dhcpv4.MessageTypeRequest || chain.IsNAK(out) {
		return out
	}
	// What the server does with an ACK the chain let through: commit its
	// lease first, NAK on a lost compare-and-set, stay silent on failure.
	l := cluster.Lease{IP: out.YourIPAddr.String(), MAC: chain.MAC(req), ClientID: chain.ClientID(req)}
	done := make(chan error, 1)
	f.book.Commit("b1", l, time.Hour, func(err error) { done <- err })
	switch err := <-done; {
	case errors.Is(err, cluster.ErrConflict):
		return chain.NAK(out, "address in use")
	case err != nil:
		return nil
	}
	return out
}

func discover(hw net.HardwareAddr) *dhcpv4.DHCPv4 {
	req, _ := dhcpv4.NewDiscovery(hw)
	return req
}

func request(hw net.HardwareAddr, ip string) *dhcpv4.DHCPv4 {
	req, _ := dhcpv4.New(dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(ip))))
	return req
}

// dora runs DISCOVER then REQUEST and returns the ACKed address or "NAK".
func (f *fixture) dora(hw net.HardwareAddr) string {
	offer := f.run(discover(hw), "")
	if offer == nil {
		return "no offer"
	}
	return f.answer(f.run(request(hw, offer.YourIPAddr.String()), ""))
}

func (f *fixture) answer(ack *dhcpv4.DHCPv4) string {
	switch {
	case ack == nil:
		return "silent"
	case chain.IsNAK(ack):
		return "NAK"
	}
	return ack.YourIPAddr.String()
}

func TestDORACommitsLease(t *testing.T) {
	f := newFixture(t, site())
	got := f.dora(mac(1))
	// .1 is the router and .2 the appliance: both excluded.
	if got != "10.1.0.3" {
		t.Fatalf("first lease = %s, want 10.1.0.3", got)
	}
	l, ok := f.store.Lease(got)
	if !ok || l.MAC != "02:00:00:00:00:01" || l.Site != "b1" || l.State != cluster.LeaseBound || !l.Expires.Equal(f.now.Add(time.Hour)) {
		t.Fatalf("stored lease = %+v, %v", l, ok)
	}
	if again := f.dora(mac(1)); again != got {
		t.Fatalf("same client got %s then %s", got, again)
	}
	if other := f.dora(mac(2)); other == got || other == "NAK" {
		t.Fatalf("second client got %s", other)
	}
}

func TestRequestAnswers(t *testing.T) {
	s := site()
	s.Reservations = []cluster.Reservation{{MAC: "02:00:00:00:00:63", IP: "10.1.0.5"}}
	f := newFixture(t, s)
	offered := f.run(discover(mac(1)), "").YourIPAddr.String()

	tests := []struct {
		name     string
		hw       net.HardwareAddr
		ip       string
		reserved string
		want     string
	}{
		{"offered to another client", mac(2), offered, "", "NAK"},
		{"outside the subnet", mac(2), "10.9.0.7", "", "NAK"},
		{"outside the range", mac(2), "10.1.0.200", "", "NAK"},
		{"the router", mac(2), "10.1.0.1", "", "NAK"},
		{"someone's reservation", mac(2), "10.1.0.5", "", "NAK"},
		{"reserved client, other address", mac(99), "10.1.0.7", "10.1.0.5", "NAK"},
		{"reserved client, its address", mac(99), "10.1.0.5", "10.1.0.5", "10.1.0.5"},
		{"init-reboot into a free address", mac(3), "10.1.0.9", "", "10.1.0.9"},
		{"the client it was offered to", mac(1), offered, "", offered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := f.answer(f.run(request(tt.hw, tt.ip), tt.reserved)); got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestRenewExtends(t *testing.T) {
	f := newFixture(t, site())
	ip := f.dora(mac(1))
	f.now = f.now.Add(30 * time.Minute)
	renew, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(1)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithClientIP(net.ParseIP(ip)))
	if got := f.answer(f.run(renew, "")); got != ip {
		t.Fatalf("renewal got %s, want %s", got, ip)
	}
	if l, _ := f.store.Lease(ip); !l.Expires.Equal(f.now.Add(time.Hour)) {
		t.Fatalf("expiry %v not extended to %v", l.Expires, f.now.Add(time.Hour))
	}
}

func TestReleaseAndDecline(t *testing.T) {
	f := newFixture(t, site())
	ip := f.dora(mac(1))
	rel, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(1)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithClientIP(net.ParseIP(ip)))
	if out := f.run(rel, ""); out != nil {
		t.Fatal("RELEASE got a reply")
	}
	if _, ok := f.store.Lease(ip); ok {
		t.Fatal("released lease still stored")
	}

	ip = f.dora(mac(2))
	dec, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(2)), dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(ip))))
	if out := f.run(dec, ""); out != nil {
		t.Fatal("DECLINE got a reply")
	}
	if l, ok := f.store.Lease(ip); !ok || l.State != cluster.LeaseDeclined {
		t.Fatalf("declined address stored as %+v", l)
	}
	if again := f.dora(mac(2)); again == ip {
		t.Fatalf("declined address %s handed out again", ip)
	}
	if got := f.answer(f.run(request(mac(3), ip), "")); got != "NAK" {
		t.Fatalf("request for a quarantined address: %s", got)
	}
}

func TestExhaustedPoolStaysSilent(t *testing.T) {
	s := site()
	s.RangeStart, s.RangeEnd = "10.1.0.10", "10.1.0.11"
	f := newFixture(t, s)
	for i := 1; i <= 2; i++ {
		if got := f.dora(mac(i)); got == "NAK" || got == "no offer" {
			t.Fatalf("client %d: %s", i, got)
		}
	}
	if offer := f.run(discover(mac(3)), ""); offer != nil {
		t.Fatalf("exhausted pool offered %s", offer.YourIPAddr)
	}
}

func TestConcurrentClientsGetDistinctAddresses(t *testing.T) {
	s := site()
	s.Subnet, s.RangeStart, s.RangeEnd, s.Router = "10.1.0.0/16", "10.1.1.0", "10.1.3.255", "10.1.0.1"
	f := newFixture(t, s)
	const n = 200
	got := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i] = f.dora(mac(i)) })
	}
	wg.Wait()
	seen := map[string]int{}
	for i, ip := range got {
		if net.ParseIP(ip) == nil {
			t.Fatalf("client %d: %s", i, ip)
		}
		if j, dup := seen[ip]; dup {
			t.Fatalf("clients %d and %d both got %s", j, i, ip)
		}
		seen[ip] = i
	}
	if len(f.store.Leases()) != n {
		t.Fatalf("%d leases stored, want %d", len(f.store.Leases()), n)
	}
}

func TestSetupErrors(t *testing.T) {
	tests := map[string]func(*cluster.Site){
		"range outside subnet": func(s *cluster.Site) { s.RangeEnd = "10.2.0.1" },
		"bad start":            func(s *cluster.Site) { s.RangeStart = "x" },
		"reversed":             func(s *cluster.Site) { s.RangeStart, s.RangeEnd = "10.1.0.20", "10.1.0.1" },
	}
	for name, mutate := range tests {
		s := site()
		mutate(&s)
		book := leases.NewBook(context.Background(), cluster.NewMemory(), leases.Config{})
		if _, err := setup(chain.Env{Site: s, Subnet: netip.MustParsePrefix(s.Subnet), Leases: book}); err == nil {
			t.Errorf("%s: setup succeeded", name)
		}
	}
}
