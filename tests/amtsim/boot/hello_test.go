package boot

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/branchbox/branchbox/tests/amtsim/device"
	"github.com/branchbox/branchbox/tests/amtsim/firmware"
	"github.com/branchbox/branchbox/tests/amtsim/hello"
)

func TestParseSchedule(t *testing.T) {
	s, err := ParseSchedule(DefaultSchedule)
	if err != nil {
		t.Fatal(err)
	}
	for n, want := range map[int]time.Duration{0: time.Minute, 4: time.Minute, 5: 5 * time.Minute, 15: 5 * time.Minute, 16: time.Hour, 38: time.Hour} {
		if got, ok := s.delay(n); !ok || got != want {
			t.Errorf("delay(%d) = %v, %v; want %v", n, got, ok, want)
		}
	}
	if _, ok := s.delay(39); ok {
		t.Error("schedule does not end after 39 hellos (24 h)")
	}
	for _, bad := range []string{"", "5", "0x1m", "3xsoon", "2x-1s"} {
		if _, err := ParseSchedule(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// loopbackServer is a DNS answerer and a hello collector on 127.0.0.1.
type loopbackServer struct {
	dnsAddr string
	port    int
	mu      sync.Mutex
	got     []hello.Packet
	queries []string
}

func startLoopback(t *testing.T) *loopbackServer {
	t.Helper()
	s := &loopbackServer{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s.port = ln.Addr().(*net.TCPAddr).Port
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			raw, _ := io.ReadAll(c)
			c.Close()
			p, err := hello.Parse(raw)
			if err != nil {
				t.Errorf("hello: %v", err)
				continue
			}
			s.mu.Lock()
			s.got = append(s.got, p)
			s.mu.Unlock()
		}
	}()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		s.mu.Lock()
		s.queries = append(s.queries, q.Question[0].Name)
		s.mu.Unlock()
		if strings.EqualFold(q.Question[0].Name, "provisionserver.site.example.com.") {
			r.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.IPv4(127, 0, 0, 1)}}
		} else {
			r.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(r)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	s.dnsAddr = pc.LocalAddr().String()
	return s
}

func (s *loopbackServer) packets() []hello.Packet {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]hello.Packet(nil), s.got...)
}

func newDevice(t *testing.T, window time.Duration, pid string, version string) *device.Device {
	t.Helper()
	p, err := firmware.Lookup(version)
	if err != nil {
		t.Fatal(err)
	}
	uuid, _ := hello.ParseUUID("12345678-9abc-def0-1122-334455667788")
	d, err := device.New(device.Config{UUID: uuid, Profile: p, DNSSuffix: "site.example.com", SetupMode: true, FirstWindow: window, PID: pid,
		Faults: device.Faults{RebootDowntime: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func runHello(t *testing.T, s *loopbackServer, d *device.Device, schedule string) context.CancelFunc {
	t.Helper()
	sched, err := ParseSchedule(schedule)
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(s.dnsAddr)
	h := &Hello{Device: d, LocalIP: net.ParseIP("127.0.0.1"), DNS: []net.IP{net.ParseIP(host)}, Port: s.port, Schedule: sched, Log: slog.Default()}
	// The DNS port is not 53 here; resolve through the test server's port.
	h.dnsPort = port
	ctx, cancel := context.WithCancel(context.Background())
	go h.Run(ctx)
	t.Cleanup(cancel)
	return cancel
}

func TestHelloScheduleWindowAndReboot(t *testing.T) {
	s := startLoopback(t)
	d := newDevice(t, 1500*time.Millisecond, "", "16")
	runHello(t, s, d, "2x100ms,100x300ms")
	time.Sleep(2 * time.Second)
	got := s.packets()
	// 0 ms, 100, 200, 500, 800, 1100, 1400: the window closes at 1.5 s.
	if len(got) < 4 || len(got) > 8 {
		t.Fatalf("%d hellos in a 1.5 s window", len(got))
	}
	for i, p := range got {
		if p.RetryCount != uint32(i) || p.Version != hello.VersionPKI || len(p.Hashes) != 23 {
			t.Fatalf("hello %d: retry %d version %d hashes %d", i, p.RetryCount, p.Version, len(p.Hashes))
		}
	}
	time.Sleep(700 * time.Millisecond)
	if n := len(s.packets()); n != len(got) {
		t.Fatalf("hellos after the window closed: %d -> %d", len(got), n)
	}
	s.mu.Lock()
	q := s.queries[0]
	s.mu.Unlock()
	if q != "ProvisionServer.site.example.com." {
		t.Fatalf("query %q", q)
	}
}

func TestHelloRestartsAfterReboot(t *testing.T) {
	s := startLoopback(t)
	d := newDevice(t, time.Hour, "", "16")
	runHello(t, s, d, "1x100ms,100x10s")
	time.Sleep(400 * time.Millisecond)
	if n := len(s.packets()); n != 2 {
		t.Fatalf("%d hellos before reboot, want 2", n)
	}
	d.Reboot()
	time.Sleep(900 * time.Millisecond)
	got := s.packets()
	if len(got) != 4 || got[2].RetryCount != 2 {
		t.Fatalf("after reboot: %d hellos", len(got))
	}
}

func TestPSKHello(t *testing.T) {
	s := startLoopback(t)
	d := newDevice(t, time.Hour, "ABCD1234", "3.0")
	runHello(t, s, d, "1x10s")
	time.Sleep(300 * time.Millisecond)
	got := s.packets()
	if len(got) != 1 || got[0].Version != hello.VersionPSK || got[0].PID != "ABCD1234" {
		t.Fatalf("PSK hello: %+v", got)
	}
}
