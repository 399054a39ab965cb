package provisionserver

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/plugins/dns/internal/zone"
)

// Sites is the part of the store the table reads.
type Sites interface {
	Sites() []cluster.Site
	WatchConfig() (<-chan struct{}, func())
}

// Addresses returns the addresses of the provisioners serving a site right
// now. The appliance supplies it: on a single box, the box's own address
// on the site's subnet; in a cluster, the live members' addresses.
type Addresses func(cluster.Site) []netip.Addr

// Table is the live answer set for every site zone. Queries read an
// immutable snapshot through an atomic pointer, so answering takes no lock;
// Refresh builds a new snapshot from the store and Addresses.
type Table struct {
	sites Sites
	addrs Addresses
	cur   atomic.Pointer[snapshot]
}

type snapshot struct {
	zones map[string]*siteZone // by canonical domain
}

type siteZone struct {
	apex string
	v4   []net.IP
	v6   []net.IP
}

// NewTable returns a table already filled from sites and addrs.
func NewTable(sites Sites, addrs Addresses) *Table {
	t := &Table{sites: sites, addrs: addrs}
	t.Refresh()
	return t
}

// Refresh rebuilds the table now. Call it when something Addresses
// depends on changed outside the store (cluster membership, an interface
// address); Run calls it on every store change.
func (t *Table) Refresh() {
	s := &snapshot{zones: map[string]*siteZone{}}
	for _, site := range t.sites.Sites() {
		if site.Domain == "" {
			continue
		}
		apex := zone.Canonical(site.Domain)
		z, ok := s.zones[apex]
		if !ok {
			// Two sites sharing a domain are one zone: its provisioners
			// are those of either site.
			z = &siteZone{apex: apex}
			s.zones[apex] = z
		}
		for _, a := range t.addrs(site) {
			z.add(a)
		}
	}
	t.cur.Store(s)
}

func (z *siteZone) add(a netip.Addr) {
	a = a.Unmap()
	list := &z.v6
	if a.Is4() {
		list = &z.v4
	}
	ip := net.IP(a.AsSlice())
	for _, have := range *list {
		if have.Equal(ip) {
			return
		}
	}
	*list = append(*list, ip)
}

// Run refreshes the table on every store change and every period (for
// address changes the store does not see) until ctx ends.
func (t *Table) Run(ctx context.Context, period time.Duration) {
	changed, stop := t.sites.WatchConfig()
	defer stop()
	// A change between NewTable and the subscription would otherwise be
	// missed until the next tick.
	t.Refresh()
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
		t.Refresh()
	}
}

func (t *Table) snapshot() *snapshot { return t.cur.Load() }
