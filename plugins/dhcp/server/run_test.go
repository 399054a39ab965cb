package server

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/branchbox/branchbox/cluster"
)

// health records what the server reports.
type health struct {
	mu     sync.Mutex
	ok     bool
	detail string
}

func (h *health) set(ok bool, detail string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ok, h.detail = ok, detail
}

func (h *health) get() (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ok, h.detail
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRunOverLoopback drives the real sockets through the relay path: the
// test is the relay, listening where replies to giaddr go.
func TestRunOverLoopback(t *testing.T) {
	relay, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	listen, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	serverAddr := listen.LocalAddr().(*net.UDPAddr)
	listen.Close()

	store := cluster.NewMemory()
	putSites(t, store, cluster.Site{Name: "lo1", Domain: "lo1.example.com", Relay: true, Subnet: "127.0.0.0/16",
		RangeStart: "127.0.1.0", RangeEnd: "127.0.1.255", Router: "127.0.0.1", LeaseTime: time.Second})
	h := &health{}
	s := New(store, Options{RelayListen: serverAddr.String(), Health: h.set, ExpireEvery: 200 * time.Millisecond})
	s.serverPort = relay.LocalAddr().(*net.UDPAddr).Port
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	eventually(t, "the first site", func() bool { ok, d := h.get(); return ok && strings.Contains(d, "lo1") })

	exchange := func(pkt []byte) *dhcpv4.DHCPv4 {
		t.Helper()
		if _, err := relay.WriteToUDP(pkt, serverAddr); err != nil {
			t.Fatal(err)
		}
		relay.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 1500)
		n, _, err := relay.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no reply: %v", err)
		}
		m, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	giaddr := net.IPv4(127, 0, 0, 1)
	offer := exchange(discoverPkt(t, hw(1), giaddr))
	ack := exchange(requestPkt(t, hw(1), giaddr, offer.YourIPAddr, offer.ServerIdentifier()))
	if ack.MessageType() != dhcpv4.MessageTypeAck || ack.DomainName() != "lo1.example.com" {
		t.Fatalf("got %s with domain %q", ack.MessageType(), ack.DomainName())
	}
	ip := ack.YourIPAddr.String()
	if _, ok := store.Lease(ip); !ok {
		t.Fatal("ACKed lease not in the store")
	}

	// A site added through the store is served without a restart.
	putSites(t, store, cluster.Site{Name: "lo2", Domain: "lo2.example.com", Relay: true, Subnet: "127.2.0.0/16",
		RangeStart: "127.2.1.0", RangeEnd: "127.2.1.255", Router: "127.2.0.1"})
	eventually(t, "the added site", func() bool { _, d := h.get(); return strings.Contains(d, "lo2") })
	offer2 := exchange(discoverPkt(t, hw(2), net.IPv4(127, 2, 0, 1)))
	if offer2.DomainName() != "lo2.example.com" {
		t.Fatalf("added site answered with domain %q", offer2.DomainName())
	}

	// The one-second lease is reclaimed by the leader's sweep.
	eventually(t, "lease expiry", func() bool { _, ok := store.Lease(ip); return !ok })
}

func TestRunReportsBrokenSites(t *testing.T) {
	store := cluster.NewMemory()
	putSites(t, store, cluster.Site{Name: "ghost", Interface: "bb-no-such-if", Subnet: "10.9.0.0/24", RangeStart: "10.9.0.10", RangeEnd: "10.9.0.20"})
	h := &health{}
	s := New(store, Options{Health: h.set})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	eventually(t, "a health report", func() bool { _, d := h.get(); return d != "" })
	cancel()
	<-done
	ok, detail := h.get()
	if ok || !strings.Contains(detail, "ghost") || !strings.Contains(detail, "bb-no-such-if") {
		t.Fatalf("health = %v %q", ok, detail)
	}
}
