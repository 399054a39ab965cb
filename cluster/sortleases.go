package cluster

import (
	"net/netip"
	"slices"
	"strings"
)

// SortLeases orders leases in place by site, then address. Addresses are
// parsed once each, not once per comparison: there may be thousands.
func SortLeases(ls []Lease) {
	type keyed struct {
		addr netip.Addr
		l    Lease
	}
	ks := make([]keyed, len(ls))
	for i, l := range ls {
		a, _ := netip.ParseAddr(l.IP)
		ks[i] = keyed{a, l}
	}
	slices.SortFunc(ks, func(a, b keyed) int {
		if c := strings.Compare(a.l.Site, b.l.Site); c != 0 {
			return c
		}
		if c := a.addr.Compare(b.addr); c != 0 {
			return c
		}
		return strings.Compare(a.l.IP, b.l.IP)
	})
	for i := range ks {
		ls[i] = ks[i].l
	}
}
