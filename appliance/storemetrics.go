package appliance

import (
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/branchbox/branchbox/cluster"
)

// storeCollector reports, at scrape time, what the replicated store holds:
// leases and pool use per site, devices per provisioning state. Reading
// the in-memory indexes costs one pass per scrape and nothing per packet.
type storeCollector struct {
	st       *cluster.Store
	leases   *prometheus.Desc
	poolSize *prometheus.Desc
	poolUsed *prometheus.Desc
	devices  *prometheus.Desc
}

func newStoreCollector(st *cluster.Store) *storeCollector {
	return &storeCollector{
		st:       st,
		leases:   prometheus.NewDesc("branchbox_dhcp_leases", "Leases in the store, by site and state.", []string{"site", "state"}, nil),
		poolSize: prometheus.NewDesc("branchbox_dhcp_pool_size", "Addresses in the site's dynamic range.", []string{"site"}, nil),
		poolUsed: prometheus.NewDesc("branchbox_dhcp_pool_used_ratio", "Share of the site's dynamic range held by unexpired leases (0-1).", []string{"site"}, nil),
		devices:  prometheus.NewDesc("branchbox_devices", "AMT devices by provisioning state.", []string{"state"}, nil),
	}
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.leases
	ch <- c.poolSize
	ch <- c.poolUsed
	ch <- c.devices
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	type siteUse struct {
		first, last netip.Addr
		byState     map[string]int
		inRange     int
	}
	use := map[string]*siteUse{}
	now := time.Now()
	for _, s := range c.st.Sites() {
		u := &siteUse{byState: map[string]int{}}
		u.first, _ = netip.ParseAddr(s.RangeStart)
		u.last, _ = netip.ParseAddr(s.RangeEnd)
		use[s.Name] = u
	}
	for _, l := range c.st.Leases() {
		u, ok := use[l.Site]
		if !ok {
			continue
		}
		u.byState[l.State]++
		if l.State != cluster.LeaseBound || l.Expires.Before(now) {
			continue
		}
		if ip, err := netip.ParseAddr(l.IP); err == nil && u.first.IsValid() && ip.Compare(u.first) >= 0 && ip.Compare(u.last) <= 0 {
			u.inRange++
		}
	}
	for name, u := range use {
		for state, n := range u.byState {
			ch <- prometheus.MustNewConstMetric(c.leases, prometheus.GaugeValue, float64(n), name, state)
		}
		if !u.first.IsValid() || !u.last.IsValid() {
			continue
		}
		size := rangeSize(u.first, u.last)
		ch <- prometheus.MustNewConstMetric(c.poolSize, prometheus.GaugeValue, float64(size), name)
		if size > 0 {
			ch <- prometheus.MustNewConstMetric(c.poolUsed, prometheus.GaugeValue, float64(u.inRange)/float64(size), name)
		}
	}
	counts := map[string]int{}
	for _, d := range c.st.Devices() {
		counts[d.State]++
	}
	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.devices, prometheus.GaugeValue, float64(n), state)
	}
}

func rangeSize(first, last netip.Addr) int {
	a, b := first.As4(), last.As4()
	lo := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	hi := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	if hi < lo {
		return 0
	}
	return int(hi-lo) + 1
}
