package leases

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/branchbox/branchbox/cluster"
)

// BenchmarkRefresh is one rebuild of the table from a branch's worth of
// leases (10,000, half with a hostname), after a lease changed: the burst
// of CPU the DHCP server shares its core with under churn.
func BenchmarkRefresh(b *testing.B) {
	s := cluster.NewMemory()
	ctx := context.Background()
	now := time.Now()
	if err := s.Apply(ctx, cluster.PutSite{Site: cluster.Site{Name: "s", Domain: "branch.example", Subnet: "10.0.0.0/16"}}); err != nil {
		b.Fatal(err)
	}
	lease := func(i int) cluster.Lease {
		l := cluster.Lease{IP: fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), ClientID: fmt.Sprint(i), Site: "s", Expires: now.Add(time.Hour)}
		if i%2 == 0 {
			l.Hostname = fmt.Sprintf("pc-%d", i)
		}
		return l
	}
	for i := range 10000 {
		if err := s.Apply(ctx, cluster.LeaseCAS{Lease: lease(i), Time: now}); err != nil {
			b.Fatal(err)
		}
	}
	t := NewTable(s)
	i := 0
	for b.Loop() {
		l := lease(i % 10000)
		l.Expires = now.Add(2 * time.Hour)
		if err := s.Apply(ctx, cluster.LeaseCAS{Lease: l, Time: now}); err != nil {
			b.Fatal(err)
		}
		t.Refresh()
		i++
	}
}
