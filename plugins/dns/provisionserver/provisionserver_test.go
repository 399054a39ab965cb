package provisionserver

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/plugins/dns/internal/zone"
)

// storeWithSites is the real in-memory store holding the given sites.
func storeWithSites(t *testing.T, sites ...cluster.Site) *cluster.Store {
	t.Helper()
	st := cluster.NewMemory()
	for _, s := range sites {
		putSite(t, st, s)
	}
	return st
}

func putSite(t *testing.T, st *cluster.Store, s cluster.Site) {
	t.Helper()
	if err := st.Apply(context.Background(), cluster.PutSite{Site: s, Time: time.Now()}); err != nil {
		t.Fatalf("put site %q: %v", s.Name, err)
	}
}

// staticAddrs answers from a map by site name, standing in for the
// appliance's interface lookup.
func staticAddrs(m map[string][]string) Addresses {
	return func(s cluster.Site) []netip.Addr {
		var out []netip.Addr
		for _, a := range m[s.Name] {
			out = append(out, netip.MustParseAddr(a))
		}
		return out
	}
}

var (
	branch1 = cluster.Site{Name: "branch1", Domain: "branch1.example.com", Subnet: "10.1.0.0/24"}
	branch2 = cluster.Site{Name: "branch2", Domain: "Branch2.Example.com.", Subnet: "10.2.0.0/24"}
	addrs   = map[string][]string{
		"branch1": {"10.1.0.1", "fd00:1::1"},
		"branch2": {"10.2.0.1", "::ffff:10.2.0.2"},
	}
)

type nextRecorder struct{ called bool }

func (n *nextRecorder) Name() string { return "next" }
func (n *nextRecorder) ServeDNS(context.Context, dns.ResponseWriter, *dns.Msg) (int, error) {
	n.called = true
	return dns.RcodeSuccess, nil
}

func TestServeDNS(t *testing.T) {
	table := NewTable(storeWithSites(t, branch1, branch2), staticAddrs(addrs))
	tests := []struct {
		name       string
		qname      string
		qtype      uint16
		fall       bool
		wantNext   bool
		wantRcode  int
		wantAnswer []string
		wantSOA    bool
	}{
		{name: "A", qname: "ProvisionServer.branch1.example.com.", qtype: dns.TypeA,
			wantAnswer: []string{"ProvisionServer.branch1.example.com.\t30\tIN\tA\t10.1.0.1"}},
		{name: "any letter case, owner echoed", qname: "provisionserver.BRANCH1.example.com.", qtype: dns.TypeA,
			wantAnswer: []string{"provisionserver.BRANCH1.example.com.\t30\tIN\tA\t10.1.0.1"}},
		{name: "second site, mapped v4 unmapped", qname: "provisionserver.branch2.example.com.", qtype: dns.TypeA,
			wantAnswer: []string{"provisionserver.branch2.example.com.\t30\tIN\tA\t10.2.0.1", "provisionserver.branch2.example.com.\t30\tIN\tA\t10.2.0.2"}},
		{name: "AAAA", qname: "provisionserver.branch1.example.com.", qtype: dns.TypeAAAA,
			wantAnswer: []string{"provisionserver.branch1.example.com.\t30\tIN\tAAAA\tfd00:1::1"}},
		{name: "AAAA with no v6 address is NODATA", qname: "provisionserver.branch2.example.com.", qtype: dns.TypeAAAA,
			wantSOA: true},
		{name: "other type is NODATA", qname: "provisionserver.branch1.example.com.", qtype: dns.TypeMX,
			wantSOA: true},
		{name: "ANY gives both families", qname: "provisionserver.branch1.example.com.", qtype: dns.TypeANY,
			wantAnswer: []string{"provisionserver.branch1.example.com.\t30\tIN\tA\t10.1.0.1", "provisionserver.branch1.example.com.\t30\tIN\tAAAA\tfd00:1::1"}},
		{name: "apex SOA", qname: "branch1.example.com.", qtype: dns.TypeSOA,
			wantAnswer: []string{"branch1.example.com.\t30\tIN\tSOA\tprovisionserver.branch1.example.com. hostmaster.branch1.example.com. 1 7200 1800 86400 30"}},
		{name: "apex A is NODATA", qname: "branch1.example.com.", qtype: dns.TypeA, wantSOA: true},
		{name: "unknown name is NXDOMAIN", qname: "nope.branch1.example.com.", qtype: dns.TypeA,
			wantRcode: dns.RcodeNameError, wantSOA: true},
		{name: "below provisionserver is NXDOMAIN", qname: "x.provisionserver.branch1.example.com.", qtype: dns.TypeA,
			wantRcode: dns.RcodeNameError, wantSOA: true},
		{name: "unknown name with fallthrough", qname: "host.branch1.example.com.", qtype: dns.TypeA,
			fall: true, wantNext: true},
		{name: "fallthrough keeps answering provisionserver", qname: "provisionserver.branch1.example.com.", qtype: dns.TypeA,
			fall: true, wantAnswer: []string{"provisionserver.branch1.example.com.\t30\tIN\tA\t10.1.0.1"}},
		{name: "outside the sites", qname: "provisionserver.example.org.", qtype: dns.TypeA, wantNext: true},
		{name: "parent of a site", qname: "provisionserver.example.com.", qtype: dns.TypeA, wantNext: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			next := &nextRecorder{}
			p := &ProvisionServer{Next: next, Table: table, TTL: zone.DefaultTTL, Fallthrough: tc.fall}
			r := new(dns.Msg)
			r.SetQuestion(tc.qname, tc.qtype)
			rec := dnstest.NewRecorder(&test.ResponseWriter{})
			rcode, err := p.ServeDNS(context.Background(), rec, r)
			if err != nil {
				t.Fatal(err)
			}
			if next.called != tc.wantNext {
				t.Fatalf("next called = %v, want %v", next.called, tc.wantNext)
			}
			if tc.wantNext {
				if rec.Msg != nil {
					t.Fatalf("wrote a reply and passed on:\n%v", rec.Msg)
				}
				return
			}
			m := rec.Msg
			if rcode != tc.wantRcode || m.Rcode != tc.wantRcode {
				t.Fatalf("rcode %d / reply %d, want %d", rcode, m.Rcode, tc.wantRcode)
			}
			if !m.Authoritative {
				t.Error("reply not authoritative")
			}
			var got []string
			for _, rr := range m.Answer {
				got = append(got, rr.String())
			}
			if !slices.Equal(got, tc.wantAnswer) {
				t.Errorf("answer:\n got %q\nwant %q", got, tc.wantAnswer)
			}
			hasSOA := len(m.Ns) == 1 && m.Ns[0].Header().Rrtype == dns.TypeSOA
			if hasSOA != tc.wantSOA {
				t.Errorf("SOA in authority = %v, want %v (%v)", hasSOA, tc.wantSOA, m.Ns)
			}
		})
	}
}

func query(t *testing.T, p *ProvisionServer, qname string) []string {
	t.Helper()
	r := new(dns.Msg)
	r.SetQuestion(qname, dns.TypeA)
	rec := dnstest.NewRecorder(&test.ResponseWriter{})
	if _, err := p.ServeDNS(context.Background(), rec, r); err != nil {
		t.Fatal(err)
	}
	if rec.Msg == nil {
		return nil
	}
	var out []string
	for _, rr := range rec.Msg.Answer {
		out = append(out, rr.(*dns.A).A.String())
	}
	return out
}

// The table follows the store: a site added, changed or removed is
// answered for without restarting anything.
func TestRunFollowsStore(t *testing.T) {
	st := storeWithSites(t, branch1)
	live := map[string][]string{"branch1": {"10.1.0.1"}, "branch3": {"10.3.0.1"}}
	table := NewTable(st, staticAddrs(live))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { table.Run(ctx, time.Hour); close(done) }()
	defer func() { cancel(); <-done }()
	p := &ProvisionServer{Next: &nextRecorder{}, Table: table, TTL: zone.DefaultTTL}

	const q3 = "provisionserver.branch3.example.com."
	if got := query(t, p, q3); got != nil {
		t.Fatalf("branch3 answered before it existed: %v", got)
	}
	putSite(t, st, cluster.Site{Name: "branch3", Domain: "branch3.example.com", Subnet: "10.3.0.0/24"})
	eventually(t, func() bool { return slices.Equal(query(t, p, q3), []string{"10.3.0.1"}) })

	if err := st.Apply(context.Background(), cluster.DeleteSite{Name: "branch3", Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return query(t, p, q3) == nil })
}

// Refresh picks up address changes the store never sees (a member joins,
// an interface gets a new address).
func TestRefreshFollowsAddresses(t *testing.T) {
	live := map[string][]string{"branch1": {"10.1.0.1"}}
	table := NewTable(storeWithSites(t, branch1), staticAddrs(live))
	p := &ProvisionServer{Next: &nextRecorder{}, Table: table, TTL: zone.DefaultTTL}
	live["branch1"] = []string{"10.1.0.1", "10.1.0.2"}
	table.Refresh()
	if got := query(t, p, "provisionserver.branch1.example.com."); !slices.Equal(got, []string{"10.1.0.1", "10.1.0.2"}) {
		t.Fatalf("after refresh: %v", got)
	}
}

func eventually(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
