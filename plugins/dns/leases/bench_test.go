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
	s, t, lease, now := branch(b)
	i := 0
	for b.Loop() {
		l := lease(i % 10000)
		l.Expires = now.Add(2 * time.Hour)
		if err := s.Apply(context.Background(), cluster.LeaseCAS{Lease: l, Time: now}); err != nil {
			b.Fatal(err)
		}
		t.Refresh()
		i++
	}
}

// BenchmarkUpdate is what Run does under a storm of 1,000 commits a
// second: bring the same table up to date after the 250 lease changes of
// one refreshEvery.
func BenchmarkUpdate(b *testing.B) {
	s, t, lease, now := branch(b)
	i := 0
	for b.Loop() {
		b.StopTimer()
		for range 250 {
			l := lease(i % 10000)
			l.Expires = now.Add(2 * time.Hour)
			if err := s.Apply(context.Background(), cluster.LeaseCAS{Lease: l, Time: now}); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.StartTimer()
		t.update()
	}
}

// branch is a store holding a branch's worth of leases (10,000, half with
// a hostname) and a table built from it.
func branch(b *testing.B) (*cluster.Store, *Table, func(int) cluster.Lease, time.Time) {
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
	return s, NewTable(s), lease, now
}
