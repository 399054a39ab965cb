package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Two clients race for each of many addresses at once: the batcher must
// hand each caller its own item's outcome, so exactly one per address wins.
func TestConcurrentLeaseCASOutcomes(t *testing.T) {
	s := NewMemory()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const addrs = 100
	var wg sync.WaitGroup
	errs := make([][2]error, addrs)
	for i := range addrs {
		for c := range 2 {
			wg.Go(func() {
				l := Lease{IP: fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), ClientID: fmt.Sprintf("c%d-%d", i, c), Site: "s", Expires: t0.Add(time.Hour)}
				errs[i][c] = s.Apply(context.Background(), LeaseCAS{Lease: l, Time: t0})
			})
		}
	}
	wg.Wait()
	for i, e := range errs {
		won := 0
		for _, err := range e {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, ErrConflict):
				t.Errorf("address %d: %v", i, err)
			}
		}
		if won != 1 {
			t.Errorf("address %d: %d winners (%v)", i, won, e)
		}
	}
	if n := len(s.Leases()); n != addrs {
		t.Errorf("%d leases stored, want %d", n, addrs)
	}
}

func TestBatcherLeavesOutCancelledCallers(t *testing.T) {
	release := make(chan struct{})
	var got [][]LeaseCAS
	var mu sync.Mutex
	b := batcher{commit: func(ctx context.Context, items []LeaseCAS) ([]error, error) {
		mu.Lock()
		got = append(got, items)
		mu.Unlock()
		<-release // hold every committer so later callers queue
		return make([]error, len(items)), nil
	}}
	cas := func(ip string) LeaseCAS { return LeaseCAS{Lease: Lease{IP: ip}} }
	done := make(chan error, 1)
	go func() { done <- b.add(context.Background(), cas("10.0.0.1")) }()
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 })

	// Occupy every other committer so the next caller must queue; one at
	// a time, or a committer could take two callers in one batch.
	for i := range batchCommitters - 1 {
		go b.add(context.Background(), cas(fmt.Sprintf("10.0.1.%d", i)))
		waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == i+2 })
	}
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.running == batchCommitters })
	ctx, cancel := context.WithCancel(context.Background())
	cancelled := make(chan error, 1)
	go func() { cancelled <- b.add(ctx, cas("10.0.0.2")) }()
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.queue) > 0 })
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: %v", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("first caller: %v", err)
	}
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.queue) == 0 && b.idle == b.running })
	for _, batch := range got {
		for _, it := range batch {
			if it.Lease.IP == "10.0.0.2" {
				t.Error("a caller that gave up was still proposed")
			}
		}
	}
}

func TestBatcherCommitFailureReachesEveryCaller(t *testing.T) {
	boom := errors.New("not leader")
	b := batcher{commit: func(ctx context.Context, items []LeaseCAS) ([]error, error) { return nil, boom }}
	if err := b.add(context.Background(), LeaseCAS{}); !errors.Is(err, boom) {
		t.Fatalf("got %v, want %v", err, boom)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatal("condition not reached in 1s")
}

// Committers outlive their batch (a new goroutine would regrow its stack)
// and exit once idle; callers arriving just as one times out are still
// served.
func TestBatcherCommittersIdleThenExit(t *testing.T) {
	var committed atomic.Int64
	b := batcher{idleAfter: time.Millisecond, commit: func(ctx context.Context, items []LeaseCAS) ([]error, error) {
		committed.Add(int64(len(items)))
		return make([]error, len(items)), nil
	}}
	for range 50 {
		if err := b.add(context.Background(), LeaseCAS{}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i := range 400 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i%20) * 100 * time.Microsecond) // straddle the idle timeouts
			if err := b.add(context.Background(), LeaseCAS{}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := committed.Load(); n != 450 {
		t.Fatalf("%d committed, want 450", n)
	}
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.running == 0 && b.idle == 0 })

	b.idleAfter = time.Hour
	for range 20 {
		if err := b.add(context.Background(), LeaseCAS{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.idle == b.running })
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.running != 1 || b.idle != 1 {
		t.Fatalf("after sequential adds: %d committers, %d idle; want the first one woken each time", b.running, b.idle)
	}
}

// ApplyLease never waits: outcomes arrive through done, one per call, with
// the same compare-and-set answers Apply gives, and an item whose deadline
// passed before it was proposed is answered without being committed.
func TestApplyLeaseAsync(t *testing.T) {
	s := NewMemory()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const addrs = 50
	outs := make(chan [2]any, 2*addrs)
	for i := range addrs {
		for c := range 2 {
			l := Lease{IP: fmt.Sprintf("10.0.0.%d", i+1), ClientID: fmt.Sprintf("c%d-%d", i, c), Site: "s", Expires: t0.Add(time.Hour)}
			s.ApplyLease(LeaseCAS{Lease: l, Time: t0}, time.Now().Add(time.Minute), func(err error) { outs <- [2]any{i, err} })
		}
	}
	won := make([]int, addrs)
	for range 2 * addrs {
		o := <-outs
		switch err, _ := o[1].(error); {
		case err == nil:
			won[o[0].(int)]++
		case !errors.Is(err, ErrConflict):
			t.Errorf("address %d: %v", o[0], err)
		}
	}
	for i, n := range won {
		if n != 1 {
			t.Errorf("address %d: %d winners", i, n)
		}
	}

	late := make(chan error, 1)
	l := Lease{IP: "10.0.9.9", ClientID: "late", Site: "s", Expires: t0.Add(time.Hour)}
	s.ApplyLease(LeaseCAS{Lease: l, Time: t0}, time.Now().Add(-time.Second), func(err error) { late <- err })
	if err := <-late; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("expired item: %v", err)
	}
	if _, ok := s.Lease("10.0.9.9"); ok {
		t.Fatal("an item past its deadline was committed")
	}
}
