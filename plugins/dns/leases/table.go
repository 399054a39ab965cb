package leases

import (
	"context"
	"net"
	"net/netip"
	"runtime"
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
	hosts map[string]*host    // by canonical FQDN
	ptrs  map[string]*host    // by reverse name (in-addr.arpa / ip6.arpa)
}

type host struct {
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
	s := &snapshot{zones: map[string]struct{}{}, hosts: map[string]*host{}, ptrs: map[string]*host{}}
	apexOf := map[string]string{}
	for _, site := range t.src.Sites() {
		if site.Domain == "" {
			continue
		}
		apex := zone.Canonical(site.Domain)
		apexOf[site.Name] = apex
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
		h, ok := hostOf(l, apexOf[l.Site], now)
		if !ok {
			continue
		}
		// Two clients claiming one name: the newer lease wins, as the
		// newer client is the one a user most likely means.
		if old, dup := s.hosts[h.fqdn]; dup && !h.start.After(old.start) {
			continue
		}
		s.hosts[h.fqdn] = h
	}
	// Reverse records only for the hosts that won their name, so forward
	// and reverse always agree.
	for _, h := range s.hosts {
		if rev, err := dns.ReverseAddr(h.ip.String()); err == nil {
			s.ptrs[rev] = h
		}
	}
	t.cur.Store(s)
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

// Run refreshes the table on every store change until ctx ends.
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
		t.Refresh()
		// A DHCP storm commits thousands of leases a second; rebuilding
		// per commit would starve the DHCP server of CPU. Names may lag
		// a lease by refreshEvery, far less than any client takes to look,
		// and with tens of thousands of leases by whatever keeps rebuilds
		// to refreshShare of a CPU: each one is a burst of CPU that, on a
		// small box, delays DHCP answers behind it.
		// The rebuild yields, so its wall time includes whatever ran
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

// refreshEvery bounds how often the table is rebuilt under churn, and
// refreshShare stretches the wait to that many times the last rebuild.
const (
	refreshEvery = 250 * time.Millisecond
	refreshShare = 20
	maxWait      = time.Second
)

func (t *Table) snapshot() *snapshot { return t.cur.Load() }
