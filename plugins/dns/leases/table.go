package leases

import (
	"context"
	"maps"
	"math"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/plugins/dns/internal/zone"
)

// Source is the part of the store the table reads.
type Source interface {
	Sites() []cluster.Site
	Leases() []cluster.Lease
	Lease(ip string) (cluster.Lease, bool)
	LeaseChanges(since uint64) (ips []string, next uint64, ok bool)
	Watch() (<-chan struct{}, func())
}

// Table is the live set of host records built from the leases. Queries
// read an immutable snapshot through an atomic pointer and check expiry
// themselves, so a lease stops resolving the moment it expires even
// before the store's expiry sweep removes it.
type Table struct {
	src Source
	now func() time.Time
	cur atomic.Pointer[snapshot]
}

type snapshot struct {
	zones map[string]struct{} // site apexes, canonical
	hosts map[string]*host    // by canonical FQDN: the name's holder
	ptrs  map[string]*host    // by reverse name (in-addr.arpa / ip6.arpa)

	// What an update needs to apply one lease's change without a
	// rebuild: every published lease's host by address, holders of their
	// name or not, the hosts claiming each name, and the site apexes.
	byIP   map[string]*host
	claims map[string][]*host
	apexOf map[string]string // site name → apex
	// feed is the store's lease-change position the snapshot reflects.
	feed uint64
}

type host struct {
	addr    string // the lease's address as the store keys it
	fqdn    string
	apex    string
	ip      net.IP
	v4      bool
	start   time.Time
	expires time.Time
}

// NewTable returns a table already filled from src.
func NewTable(src Source) *Table {
	t := &Table{src: src, now: time.Now}
	t.Refresh()
	return t
}

// Refresh rebuilds the table from the store now.
func (t *Table) Refresh() {
	// The position is read before the leases, so a change applied in
	// between is in both and applied again by the next update, which is
	// harmless.
	_, feed, _ := t.src.LeaseChanges(math.MaxUint64)
	s := &snapshot{
		zones: map[string]struct{}{}, hosts: map[string]*host{}, ptrs: map[string]*host{},
		byIP: map[string]*host{}, claims: map[string][]*host{}, apexOf: apexes(t.src.Sites()), feed: feed,
	}
	for _, apex := range s.apexOf {
		s.zones[apex] = struct{}{}
	}
	now := t.now()
	for i, l := range t.src.Leases() {
		if i%yieldEvery == yieldEvery-1 {
			// A rebuild of a branch's leases is milliseconds of CPU; on a
			// one-CPU box the DHCP read loop would wait all of it (Go
			// preempts only after 10 ms), which was most of an ACK's p99.
			runtime.Gosched()
		}
		if h, ok := hostOf(l, s.apexOf[l.Site], now); ok {
			s.add(h)
		}
	}
	for name := range s.claims {
		s.elect(name, now)
	}
	t.cur.Store(s)
}

// update brings the table up to date with the store: change by change
// when the store still knows every lease change since the snapshot and
// no site's domain changed, else by a rebuild. A DHCP storm changes a few
// hundred leases between updates; rebuilding from all of them each time
// (copying every lease out of the store first) cost 3–6 ms per update with
// ten thousand, a few percent of a CPU.
func (t *Table) update() {
	old := t.cur.Load()
	apexOf := apexes(t.src.Sites())
	ips, feed, ok := t.src.LeaseChanges(old.feed)
	switch {
	case !ok || !maps.Equal(apexOf, old.apexOf):
		t.Refresh()
		return
	case len(ips) == 0:
		return
	}
	s := &snapshot{
		zones: old.zones, hosts: maps.Clone(old.hosts), ptrs: maps.Clone(old.ptrs),
		byIP: maps.Clone(old.byIP), claims: maps.Clone(old.claims), apexOf: old.apexOf, feed: feed,
	}
	now := t.now()
	names := map[string]bool{} // names whose holder may have changed
	done := make(map[string]bool, len(ips))
	for i, ip := range ips {
		if i%yieldEvery == yieldEvery-1 {
			runtime.Gosched() // as in Refresh
		}
		if done[ip] {
			continue
		}
		done[ip] = true
		if h := s.byIP[ip]; h != nil {
			s.remove(h)
			names[h.fqdn] = true
		}
		if l, ok := t.src.Lease(ip); ok {
			if h, ok := hostOf(l, s.apexOf[l.Site], now); ok {
				s.add(h)
				names[h.fqdn] = true
			}
		}
	}
	for name := range names {
		s.elect(name, now)
	}
	t.cur.Store(s)
}

// apexes maps each site with a domain to its canonical apex.
func apexes(sites []cluster.Site) map[string]string {
	out := map[string]string{}
	for _, site := range sites {
		if site.Domain != "" {
			out[site.Name] = zone.Canonical(site.Domain)
		}
	}
	return out
}

// add records h as a claim on its name; elect decides the holder. The
// claims slices may be shared with an older snapshot, so they are
// replaced, never written in place.
func (s *snapshot) add(h *host) {
	s.byIP[h.addr] = h
	s.claims[h.fqdn] = append(slices.Clip(s.claims[h.fqdn]), h)
}

func (s *snapshot) remove(h *host) {
	delete(s.byIP, h.addr)
	rest := slices.DeleteFunc(slices.Clone(s.claims[h.fqdn]), func(c *host) bool { return c == h })
	if len(rest) == 0 {
		delete(s.claims, h.fqdn)
	} else {
		s.claims[h.fqdn] = rest
	}
	if s.hosts[h.fqdn] == h {
		delete(s.hosts, h.fqdn)
	}
	if rev, ok := reverse(h); ok && s.ptrs[rev] == h {
		delete(s.ptrs, rev)
	}
}

// elect gives name to the newest unexpired lease claiming it (two
// clients claiming one name: the newer client is the one a user most
// likely means; the lower address breaks a tie), with a reverse record
// only for that holder, so forward and reverse always agree.
func (s *snapshot) elect(name string, now time.Time) {
	var win *host
	for _, c := range s.claims[name] {
		if !now.Before(c.expires) {
			continue
		}
		if win == nil || c.start.After(win.start) || c.start.Equal(win.start) && c.addr < win.addr {
			win = c
		}
	}
	if old := s.hosts[name]; old != nil && old != win {
		if rev, ok := reverse(old); ok && s.ptrs[rev] == old {
			delete(s.ptrs, rev)
		}
	}
	if win == nil {
		delete(s.hosts, name)
		return
	}
	s.hosts[name] = win
	if rev, ok := reverse(win); ok {
		s.ptrs[rev] = win
	}
}

func reverse(h *host) (string, bool) {
	rev, err := dns.ReverseAddr(h.ip.String())
	return rev, err == nil
}

func hostOf(l cluster.Lease, apex string, now time.Time) (*host, bool) {
	if apex == "" || l.State != cluster.LeaseBound || !now.Before(l.Expires) {
		return nil, false
	}
	label, ok := HostLabel(l.Hostname)
	if !ok {
		return nil, false
	}
	a, err := netip.ParseAddr(l.IP)
	if err != nil {
		return nil, false
	}
	a = a.Unmap()
	return &host{
		addr:    l.IP,
		fqdn:    label + "." + apex,
		apex:    apex,
		ip:      net.IP(a.AsSlice()),
		v4:      a.Is4(),
		start:   l.Start,
		expires: l.Expires,
	}, true
}

// HostLabel turns a DHCP hostname into the DNS label it is published
// under: lower case, up to the first dot, letters, digits and inner
// hyphens only. It refuses what cannot be published safely, including the
// ProvisionServer label.
func HostLabel(hostname string) (string, bool) {
	h := strings.ToLower(hostname)
	if i := strings.IndexByte(h, '.'); i >= 0 {
		h = h[:i]
	}
	if h == "" || len(h) > 63 || h == zone.ProvisionServerLabel || h[0] == '-' || h[len(h)-1] == '-' {
		return "", false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return "", false
		}
	}
	return h, true
}

// Run updates the table on every store change until ctx ends.
func (t *Table) Run(ctx context.Context) {
	changed, stop := t.src.Watch()
	defer stop()
	// A change between NewTable and the subscription would otherwise be
	// missed until the next one.
	t.Refresh()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		start := time.Now()
		t.update()
		// A DHCP storm commits thousands of leases a second; updating
		// per commit would cost the DHCP server CPU for nothing. Names
		// may lag a lease by refreshEvery, far less than any client takes
		// to look, and after a rebuild of tens of thousands of leases by
		// whatever keeps rebuilds to refreshShare of a CPU: each one is a
		// burst of CPU that, on a small box, delays DHCP answers behind it.
		// The work yields, so its wall time includes whatever ran
		// meanwhile; maxWait keeps a storm from stretching names' lag
		// past a second.
		wait := min(maxWait, max(refreshEvery, time.Since(start)*refreshShare))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// yieldEvery is how many leases a rebuild reads between letting other
// goroutines run: a few hundred microseconds' worth.
const yieldEvery = 512

// refreshEvery bounds how often the table is updated under churn, and
// refreshShare stretches the wait to that many times the last update.
const (
	refreshEvery = 250 * time.Millisecond
	refreshShare = 20
	maxWait      = time.Second
)

func (t *Table) snapshot() *snapshot { return t.cur.Load() }
