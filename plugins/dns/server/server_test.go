package server

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/plugins/dns/leases"
	dnsmetrics "github.com/branchbox/branchbox/plugins/dns/metrics"
	"github.com/branchbox/branchbox/plugins/dns/provisionserver"
)

var now = time.Now()

// testStore is the real in-memory store with two sites and one lease.
func testStore(t *testing.T) *cluster.Store {
	t.Helper()
	st := cluster.NewMemory()
	for _, cmd := range []cluster.Command{
		cluster.PutSite{Site: cluster.Site{Name: "branch1", Domain: "branch1.example.com", Subnet: "10.1.0.0/24"}},
		cluster.PutSite{Site: cluster.Site{Name: "branch2", Domain: "branch2.example.com", Subnet: "10.2.0.0/24"}},
		cluster.LeaseCAS{Time: now, Lease: cluster.Lease{IP: "10.1.0.100", ClientID: "01aa", Hostname: "nuc-01", Site: "branch1",
			State: cluster.LeaseBound, Start: now, Expires: now.Add(time.Hour)}},
	} {
		if err := st.Apply(context.Background(), cmd); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

func sources(st *cluster.Store) Sources {
	addrs := map[string]string{"branch1": "10.1.0.1", "branch2": "10.2.0.1"}
	return Sources{
		ProvisionServer: provisionserver.NewTable(st, func(s cluster.Site) []netip.Addr {
			return []netip.Addr{netip.MustParseAddr(addrs[s.Name])}
		}),
		Leases: leases.NewTable(st),
	}
}

// upstream is a resolver on loopback that answers every A query with
// answer, standing in for dns.forward.
func upstream(t *testing.T, answer string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		if r.Question[0].Qtype == dns.TypeA {
			rr, _ := dns.NewRR(r.Question[0].Name + " 60 IN A " + answer)
			m.Answer = []dns.RR{rr}
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// freePort finds a port free for both UDP and TCP on loopback.
func freePort(t *testing.T) string {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err == nil {
			pc.Close()
			return fmt.Sprint(port)
		}
	}
	t.Fatal("no free port")
	return ""
}

func start(t *testing.T, cfg Config, src Sources) *Server {
	t.Helper()
	s, err := Start(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return s
}

func ask(t *testing.T, network, addr, qname string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	c := &dns.Client{Net: network, Timeout: 3 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, qname, dns.TypeToString[qtype], err)
	}
	return r
}

func answers(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, v.A.String())
		case *dns.PTR:
			out = append(out, v.Ptr)
		default:
			out = append(out, rr.String())
		}
	}
	return out
}

func TestServe(t *testing.T) {
	up := upstream(t, "198.51.100.7")
	s := start(t, Config{Listen: "127.0.0.1:" + freePort(t), Forward: []string{up}}, sources(testStore(t)))
	udp := s.Addr().String()
	tests := []struct {
		qname     string
		qtype     uint16
		wantRcode int
		want      []string
	}{
		{"ProvisionServer.branch1.example.com.", dns.TypeA, dns.RcodeSuccess, []string{"10.1.0.1"}},
		{"provisionserver.BRANCH1.example.com.", dns.TypeA, dns.RcodeSuccess, []string{"10.1.0.1"}},
		{"provisionserver.branch2.example.com.", dns.TypeA, dns.RcodeSuccess, []string{"10.2.0.1"}},
		{"nuc-01.branch1.example.com.", dns.TypeA, dns.RcodeSuccess, []string{"10.1.0.100"}},
		{"100.0.1.10.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess, []string{"nuc-01.branch1.example.com."}},
		{"nope.branch1.example.com.", dns.TypeA, dns.RcodeNameError, nil},
		{"outside.example.org.", dns.TypeA, dns.RcodeSuccess, []string{"198.51.100.7"}},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range tests {
			r := ask(t, network, udp, tc.qname, tc.qtype)
			if r.Rcode != tc.wantRcode || !slices.Equal(answers(r), tc.want) {
				t.Errorf("%s %s: rcode %s, answers %v; want %s, %v", network, tc.qname,
					dns.RcodeToString[r.Rcode], answers(r), dns.RcodeToString[tc.wantRcode], tc.want)
			}
		}
	}
	if err := s.Probe(context.Background(), "provisionserver.branch1.example.com"); err != nil {
		t.Errorf("probe: %v", err)
	}
}

// With no upstream, names outside the sites are refused rather than
// failed.
func TestNoForwardRefuses(t *testing.T) {
	s := start(t, Config{Listen: "127.0.0.1:0"}, sources(testStore(t)))
	if r := ask(t, "udp", s.Addr().String(), "outside.example.org.", dns.TypeA); r.Rcode != dns.RcodeRefused {
		t.Fatalf("rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	if r := ask(t, "udp", s.Addr().String(), "provisionserver.branch1.example.com.", dns.TypeA); !slices.Equal(answers(r), []string{"10.1.0.1"}) {
		t.Fatalf("ProvisionServer without forward: %v", r)
	}
}

// A user snippet is served beside the generated block.
func TestSnippet(t *testing.T) {
	port := freePort(t)
	snippet := fmt.Sprintf("hosts.test.:%s {\n\tbind 127.0.0.1\n\thosts {\n\t\t192.0.2.7 printer.hosts.test\n\t}\n}", port)
	s := start(t, Config{Listen: "127.0.0.1:" + port, Corefile: snippet}, sources(testStore(t)))
	addr := s.Addr().String()
	if r := ask(t, "udp", addr, "printer.hosts.test.", dns.TypeA); !slices.Equal(answers(r), []string{"192.0.2.7"}) {
		t.Fatalf("snippet zone: %v", r)
	}
	if r := ask(t, "udp", addr, "provisionserver.branch2.example.com.", dns.TypeA); !slices.Equal(answers(r), []string{"10.2.0.1"}) {
		t.Fatalf("generated block beside the snippet: %v", r)
	}
}

func TestReload(t *testing.T) {
	upA, upB := upstream(t, "198.51.100.1"), upstream(t, "198.51.100.2")
	port := freePort(t)
	cfg := Config{Listen: "127.0.0.1:" + port, Forward: []string{upA}}
	s := start(t, cfg, sources(testStore(t)))
	addr := s.Addr().String()
	outside := func() []string { return answers(ask(t, "udp", addr, "outside.example.org.", dns.TypeA)) }
	if got := outside(); !slices.Equal(got, []string{"198.51.100.1"}) {
		t.Fatalf("before reload: %v", got)
	}

	cfg.Forward = []string{upB}
	if err := s.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if got := outside(); !slices.Equal(got, []string{"198.51.100.2"}) {
		t.Fatalf("after reload to a new upstream: %v", got)
	}

	good := s.Corefile()
	bad := cfg
	bad.Corefile = "example.test. {\n\tnosuchplugin\n}"
	if err := s.Reload(bad); err == nil || !strings.Contains(err.Error(), "nosuchplugin") {
		t.Fatalf("reload with a broken snippet: %v", err)
	}
	if s.Corefile() != good {
		t.Fatal("a failed reload replaced the running Corefile")
	}
	if got := outside(); !slices.Equal(got, []string{"198.51.100.2"}) {
		t.Fatalf("after a failed reload the old config must keep serving: %v", got)
	}
	if r := ask(t, "tcp", addr, "provisionserver.branch1.example.com.", dns.TypeA); !slices.Equal(answers(r), []string{"10.1.0.1"}) {
		t.Fatalf("TCP after a failed reload: %v", r)
	}
}

func TestStartFailsOnBusyPort(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if s, err := Start(Config{Listen: pc.LocalAddr().String()}, sources(testStore(t))); err == nil {
		s.Stop()
		t.Fatal("started on a port already in use")
	}
}

// CoreDNS's request metrics reach a registry through the metrics
// plugin's collector, as they reach the appliance's /metrics.
func TestMetricsExported(t *testing.T) {
	s := start(t, Config{Listen: "127.0.0.1:0"}, sources(testStore(t)))
	ask(t, "udp", s.Addr().String(), "provisionserver.branch1.example.com.", dns.TypeA)
	reg := prometheus.NewRegistry()
	reg.MustRegister(dnsmetrics.Collector(prometheus.DefaultGatherer))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	// CoreDNS labels a server with its configured address.
	const server = "dns://127.0.0.1:0"
	for _, f := range families {
		if f.GetName() != "coredns_dns_responses_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["server"] == server && labels["rcode"] == "NOERROR" && m.GetCounter().GetValue() >= 1 {
				return
			}
		}
	}
	t.Fatalf("no NOERROR coredns_dns_responses_total for %s", server)
}
