package leases

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/plugins/dns/internal/zone"
)

var t0 = time.Date(2026, 11, 28, 4, 0, 0, 0, time.UTC)

func apply(t *testing.T, st *cluster.Store, cmd cluster.Command) {
	t.Helper()
	if err := st.Apply(context.Background(), cmd); err != nil {
		t.Fatalf("%T: %v", cmd, err)
	}
}

func lease(ip, client, hostname, site string, start time.Time) cluster.LeaseCAS {
	return cluster.LeaseCAS{Time: start, Lease: cluster.Lease{
		IP: ip, ClientID: client, Hostname: hostname, Site: site,
		State: cluster.LeaseBound, Start: start, Expires: start.Add(time.Hour),
	}}
}

// testStore holds two sites and a set of leases covering the cases the
// table must sort out.
func testStore(t *testing.T) *cluster.Store {
	st := cluster.NewMemory()
	apply(t, st, cluster.PutSite{Site: cluster.Site{Name: "branch1", Domain: "Branch1.example.com", Subnet: "10.1.0.0/24"}})
	apply(t, st, cluster.PutSite{Site: cluster.Site{Name: "branch2", Domain: "branch2.example.com.", Subnet: "10.2.0.0/24"}})
	for _, c := range []cluster.LeaseCAS{
		lease("10.1.0.100", "c1", "NUC-01", "branch1", t0),
		lease("10.1.0.101", "c2", "laptop.corp.example", "branch1", t0),
		lease("10.2.0.100", "c3", "nuc-01", "branch2", t0),
		lease("fd00:2::100", "c4", "v6host", "branch2", t0),
		lease("10.1.0.102", "c5", "ProvisionServer", "branch1", t0),
		lease("10.1.0.103", "c6", "bad_name", "branch1", t0),
		lease("10.1.0.104", "c7", "", "branch1", t0),
		lease("10.1.0.105", "c8", "old", "branch1", t0.Add(-2*time.Hour)),
		lease("10.1.0.106", "c9", "twin", "branch1", t0),
		lease("10.1.0.107", "c10", "twin", "branch1", t0.Add(time.Minute)),
		lease("10.9.0.100", "c11", "orphan", "nosuchsite", t0),
	} {
		apply(t, st, c)
	}
	declined := lease("10.1.0.108", "c12", "declined", "branch1", t0)
	declined.Lease.State = cluster.LeaseDeclined
	apply(t, st, declined)
	return st
}

type nextRecorder struct{ called bool }

func (n *nextRecorder) Name() string { return "next" }
func (n *nextRecorder) ServeDNS(context.Context, dns.ResponseWriter, *dns.Msg) (int, error) {
	n.called = true
	return dns.RcodeSuccess, nil
}

func newTable(st *cluster.Store, now time.Time) *Table {
	t := &Table{src: st, now: func() time.Time { return now }}
	t.Refresh()
	return t
}

func TestServeDNS(t *testing.T) {
	table := newTable(testStore(t), t0.Add(30*time.Minute))
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
		{name: "A, hostname lower-cased", qname: "nuc-01.branch1.example.com.", qtype: dns.TypeA,
			wantAnswer: []string{"nuc-01.branch1.example.com.\t30\tIN\tA\t10.1.0.100"}},
		{name: "any letter case", qname: "NUC-01.BRANCH1.example.com.", qtype: dns.TypeA,
			wantAnswer: []string{"NUC-01.BRANCH1.example.com.\t30\tIN\tA\t10.1.0.100"}},
		{name: "same hostname in another site", qname: "nuc-01.branch2.example.com.", qtype: dns.TypeA,
			wantAnswer: []string{"nuc-01.branch2.example.com.\t30\tIN\tA\t10.2.0.100"}},
		{name: "dotted hostname keeps its first label", qname: "laptop.branch1.example.com.", qtype: dns.TypeA,
			wantAnswer: []string{"laptop.branch1.example.com.\t30\tIN\tA\t10.1.0.101"}},
		{name: "PTR", qname: "100.0.1.10.in-addr.arpa.", qtype: dns.TypePTR,
			wantAnswer: []string{"100.0.1.10.in-addr.arpa.\t30\tIN\tPTR\tnuc-01.branch1.example.com."}},
		{name: "AAAA", qname: "v6host.branch2.example.com.", qtype: dns.TypeAAAA,
			wantAnswer: []string{"v6host.branch2.example.com.\t30\tIN\tAAAA\tfd00:2::100"}},
		{name: "PTR ip6", qname: "0.0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.0.0.d.f.ip6.arpa.", qtype: dns.TypePTR,
			wantAnswer: []string{"0.0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.0.0.d.f.ip6.arpa.\t30\tIN\tPTR\tv6host.branch2.example.com."}},
		{name: "AAAA of a v4 host is NODATA", qname: "nuc-01.branch1.example.com.", qtype: dns.TypeAAAA, wantSOA: true},
		{name: "newer lease wins a shared name", qname: "twin.branch1.example.com.", qtype: dns.TypeA,
			wantAnswer: []string{"twin.branch1.example.com.\t30\tIN\tA\t10.1.0.107"}},
		{name: "loser of a shared name has no PTR", qname: "106.0.1.10.in-addr.arpa.", qtype: dns.TypePTR, wantNext: true},
		{name: "ProvisionServer hostname is refused", qname: "provisionserver.branch1.example.com.", qtype: dns.TypeA,
			wantRcode: dns.RcodeNameError, wantSOA: true},
		{name: "invalid hostname is refused", qname: "bad_name.branch1.example.com.", qtype: dns.TypeA,
			wantRcode: dns.RcodeNameError, wantSOA: true},
		{name: "expired lease", qname: "old.branch1.example.com.", qtype: dns.TypeA,
			wantRcode: dns.RcodeNameError, wantSOA: true},
		{name: "expired lease PTR", qname: "105.0.1.10.in-addr.arpa.", qtype: dns.TypePTR, wantNext: true},
		{name: "declined lease", qname: "declined.branch1.example.com.", qtype: dns.TypeA,
			wantRcode: dns.RcodeNameError, wantSOA: true},
		{name: "unknown name in a site", qname: "nope.branch1.example.com.", qtype: dns.TypeA,
			wantRcode: dns.RcodeNameError, wantSOA: true},
		{name: "unknown name with fallthrough", qname: "nope.branch1.example.com.", qtype: dns.TypeA,
			fall: true, wantNext: true},
		{name: "apex is NODATA", qname: "branch1.example.com.", qtype: dns.TypeA, wantSOA: true},
		{name: "apex is NODATA with fallthrough too", qname: "branch1.example.com.", qtype: dns.TypeA, fall: true, wantSOA: true},
		{name: "unknown reverse name", qname: "1.0.1.10.in-addr.arpa.", qtype: dns.TypePTR, wantNext: true},
		{name: "outside the sites", qname: "nuc-01.example.org.", qtype: dns.TypeA, wantNext: true},
		{name: "lease of an unknown site", qname: "100.0.9.10.in-addr.arpa.", qtype: dns.TypePTR, wantNext: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			next := &nextRecorder{}
			l := &Leases{Next: next, Table: table, TTL: zone.DefaultTTL, Fallthrough: tc.fall}
			r := new(dns.Msg)
			r.SetQuestion(tc.qname, tc.qtype)
			rec := dnstest.NewRecorder(&test.ResponseWriter{})
			rcode, err := l.ServeDNS(context.Background(), rec, r)
			if err != nil {
				t.Fatal(err)
			}
			if next.called != tc.wantNext {
				t.Fatalf("next called = %v, want %v (reply %v)", next.called, tc.wantNext, rec.Msg)
			}
			if tc.wantNext {
				return
			}
			m := rec.Msg
			if rcode != tc.wantRcode || m.Rcode != tc.wantRcode || !m.Authoritative {
				t.Fatalf("rcode %d, reply:\n%v", rcode, m)
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

// A lease stops resolving at its expiry, with no store change needed, and
// its TTL never outlives it.
func TestExpiry(t *testing.T) {
	st := testStore(t)
	now := t0.Add(59*time.Minute + 50*time.Second)
	table := &Table{src: st, now: func() time.Time { return now }}
	table.Refresh()
	l := &Leases{Next: &nextRecorder{}, Table: table, TTL: zone.DefaultTTL}
	ask := func() *dns.Msg {
		r := new(dns.Msg)
		r.SetQuestion("nuc-01.branch1.example.com.", dns.TypeA)
		rec := dnstest.NewRecorder(&test.ResponseWriter{})
		if _, err := l.ServeDNS(context.Background(), rec, r); err != nil {
			t.Fatal(err)
		}
		return rec.Msg
	}
	if m := ask(); len(m.Answer) != 1 || m.Answer[0].Header().Ttl != 10 {
		t.Fatalf("10 s before expiry:\n%v", m)
	}
	now = t0.Add(time.Hour)
	if m := ask(); m.Rcode != dns.RcodeNameError {
		t.Fatalf("at expiry:\n%v", m)
	}
}

// The table follows the store as leases come and go.
func TestRunFollowsStore(t *testing.T) {
	st := testStore(t)
	table := newTable(st, t0.Add(time.Minute))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { table.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	const name = "fresh.branch2.example.com."
	has := func() bool { _, ok := table.snapshot().hosts[name]; return ok }
	if has() {
		t.Fatal("host present before its lease")
	}
	apply(t, st, lease("10.2.0.150", "c20", "fresh", "branch2", t0))
	eventually(t, has)
	apply(t, st, cluster.LeaseRelease{IP: "10.2.0.150", ClientID: "c20", Time: t0})
	eventually(t, func() bool { return !has() })
}

func TestHostLabel(t *testing.T) {
	for in, want := range map[string]string{
		"nuc-01":                       "nuc-01",
		"NUC-01":                       "nuc-01",
		"host.corp.local":              "host",
		"":                             "",
		"-lead":                        "",
		"trail-":                       "",
		"under_score":                  "",
		"provisionserver":              "",
		"ProvisionServer.evil.example": "",
		"é":                            "",
		"a234567890123456789012345678901234567890123456789012345678901234": "",
	} {
		got, ok := HostLabel(in)
		if got != want || ok != (want != "") {
			t.Errorf("HostLabel(%q) = %q, %v; want %q", in, got, ok, want)
		}
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

// An update applied change by change publishes exactly what a rebuild
// from every lease would, through renames, a name changing hands, a
// release, an expiry sweep and a site's domain changing.
func TestUpdateMatchesRebuild(t *testing.T) {
	st := testStore(t)
	now := t0.Add(30 * time.Minute)
	inc := newTable(st, now)
	steps := []struct {
		name string
		cmd  cluster.Command
	}{
		{"new host", lease("10.1.0.120", "c30", "fresh", "branch1", t0)},
		{"renamed", lease("10.1.0.120", "c30", "renamed", "branch1", t0)},
		{"an older claim on a held name", lease("10.1.0.121", "c31", "twin", "branch1", t0.Add(-time.Minute))},
		{"the holder of a shared name leaves", cluster.LeaseRelease{IP: "10.1.0.107", ClientID: "c10", Time: now}},
		{"a newer claim takes it", lease("10.1.0.122", "c32", "twin", "branch1", t0.Add(2*time.Minute))},
		{"a client moves address", lease("10.1.0.123", "c32", "twin", "branch1", t0.Add(3*time.Minute))},
		{"name dropped", lease("10.1.0.120", "c30", "", "branch1", t0)},
		{"expiry sweep", cluster.LeaseExpire{Time: t0.Add(-30 * time.Minute)}},
		{"a site's domain changes", cluster.PutSite{Site: cluster.Site{Name: "branch2", Domain: "b2.example.com", Subnet: "10.2.0.0/24"}}},
		{"a host in the new domain", lease("10.2.0.101", "c33", "fresh", "branch2", t0)},
	}
	for _, step := range steps {
		apply(t, st, step.cmd)
		inc.update()
		want, got := published(newTable(st, now).snapshot()), published(inc.snapshot())
		if !slices.Equal(got, want) {
			t.Fatalf("after %s:\n got %q\nwant %q", step.name, got, want)
		}
	}
}

// published lists a snapshot's records as "name ip" lines, sorted.
func published(s *snapshot) []string {
	var out []string
	for name, h := range s.hosts {
		out = append(out, name+" "+h.ip.String())
	}
	for rev, h := range s.ptrs {
		out = append(out, rev+" "+h.fqdn)
	}
	for apex := range s.zones {
		out = append(out, apex)
	}
	slices.Sort(out)
	return out
}
