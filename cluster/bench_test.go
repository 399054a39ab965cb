package cluster

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkLeaseCommit measures lease compare-and-sets committed through a
// real single-node raft (bolt fsync included), many in flight at once as
// the DHCP server issues them.
func BenchmarkLeaseCommit(b *testing.B) {
	n, err := Open(Config{ID: "bench", DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	ctx := context.Background()
	if err := n.WaitLeader(ctx); err != nil {
		b.Fatal(err)
	}
	var seq atomic.Int64
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := seq.Add(1)
			ip := fmt.Sprintf("10.%d.%d.%d", (i>>16)&255, (i>>8)&255, i&255)
			cmd := LeaseCAS{Lease: Lease{IP: ip, ClientID: fmt.Sprint(i), Site: "s", Expires: t0.Add(time.Hour)}, Time: t0}
			if err := n.Store.Apply(ctx, cmd); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
}

// BenchmarkFSMSnapshot is how long raft's FSM goroutine is held by
// Snapshot, during which no commit is applied and no DHCP ACK can leave,
// with a branch's worth of leases (10,000) in the state.
func BenchmarkFSMSnapshot(b *testing.B) {
	s := NewMemory()
	for i := range 10000 {
		l := Lease{IP: fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), MAC: "02:00:00:00:00:01", ClientID: fmt.Sprint(i), Site: "s", Hostname: "pc", Start: t0, Expires: t0.Add(time.Hour)}
		if err := s.Apply(context.Background(), LeaseCAS{Lease: l, Time: t0}); err != nil {
			b.Fatal(err)
		}
	}
	f := fsm{s}
	for b.Loop() {
		snap, err := f.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		snap.Release()
	}
}
