package cluster

import (
	"net/netip"
	"sort"
)

func sortLeases(ls []Lease) {
	sort.Slice(ls, func(i, j int) bool {
		if ls[i].Site != ls[j].Site {
			return ls[i].Site < ls[j].Site
		}
		a, errA := netip.ParseAddr(ls[i].IP)
		b, errB := netip.ParseAddr(ls[j].IP)
		if errA != nil || errB != nil {
			return ls[i].IP < ls[j].IP
		}
		return a.Less(b)
	})
}
