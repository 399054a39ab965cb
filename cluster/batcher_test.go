package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

func TestPaceHold(t *testing.T) {
	const w = 4 * time.Millisecond
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	every := func(gap time.Duration, n int) []time.Duration {
		var at []time.Duration
		for i := range n {
			at = append(at, time.Duration(i)*gap)
		}
		return at
	}
	tests := []struct {
		name     string
		window   time.Duration
		arrivals []time.Duration // since t0
		first    time.Duration   // oldest queued item's arrival
		now      time.Duration
		want     time.Duration
	}{
		{name: "lone request", window: w, arrivals: []time.Duration{0}, now: 0, want: 0},
		{name: "steady stream holds until the window ends", window: w, arrivals: every(w/4, 20), first: 19 * w / 4, now: 19*w/4 + time.Millisecond, want: w - time.Millisecond},
		{name: "window already over", window: w, arrivals: every(w/4, 20), first: 0, now: 19 * w / 4, want: 0},
		{name: "arrivals a window apart", window: w, arrivals: every(w, 20), first: 19 * w, now: 19 * w, want: 0},
		{name: "one request after a quiet", window: w, arrivals: append(every(w/4, 20), time.Hour), first: time.Hour, now: time.Hour, want: 0},
		{name: "a few quick ones after a quiet", window: w, arrivals: append([]time.Duration{time.Hour}, every(w/8, 8)...), first: 7 * w / 8, now: 7 * w / 8, want: w},
		{name: "no window", window: 0, arrivals: every(w/4, 20), first: 19 * w / 4, now: 19 * w / 4, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p pace
			for _, a := range tt.arrivals {
				p.arrive(t0.Add(a), tt.window)
			}
			if got := p.hold(t0.Add(tt.now), t0.Add(tt.first), tt.window); got != tt.want {
				t.Fatalf("hold = %v, want %v (smoothed gap %v)", got, tt.want, p.gap)
			}
		})
	}
}

// stepClock is a clock that moves on by step at every reading: requests
// read from it arrive steadily, however slowly the test runs.
type stepClock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

func (c *stepClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(c.step)
	return c.t
}

func (c *stepClock) skip(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// recordBatches is a commit that notes each batch's size.
func recordBatches() (func(context.Context, []LeaseCAS) ([]error, error), func() []int) {
	var mu sync.Mutex
	var sizes []int
	commit := func(ctx context.Context, items []LeaseCAS) ([]error, error) {
		mu.Lock()
		sizes = append(sizes, len(items))
		mu.Unlock()
		return make([]error, len(items)), nil
	}
	return commit, func() []int { mu.Lock(); defer mu.Unlock(); return slices.Clone(sizes) }
}

func waitOutcomes(t *testing.T, done <-chan error, n int) {
	t.Helper()
	for range n {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("an outcome did not arrive in 10s")
		}
	}
}

// A request after a quiet is proposed at once, and a steady stream is
// held in one batch until it is full: the window here is too long to end
// first, so a request held by mistake would never be answered.
func TestBatcherHoldsSteadyStreamUntilFull(t *testing.T) {
	clock := &stepClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), step: time.Millisecond}
	commit, batches := recordBatches()
	b := batcher{window: time.Hour, now: clock.now, commit: commit}
	done := make(chan error, maxBatch)
	far := time.Now().Add(time.Minute)

	b.addAsync(LeaseCAS{}, far, func(err error) { done <- err })
	waitOutcomes(t, done, 1)
	for range maxBatch {
		b.addAsync(LeaseCAS{}, far, func(err error) { done <- err })
	}
	waitOutcomes(t, done, maxBatch)
	if got, want := batches(), []int{1, maxBatch}; !slices.Equal(got, want) {
		t.Fatalf("batches %v, want %v", got, want)
	}

	clock.skip(10 * time.Hour)
	b.addAsync(LeaseCAS{}, far, func(err error) { done <- err })
	waitOutcomes(t, done, 1)
	if got, want := batches(), []int{1, maxBatch, 1}; !slices.Equal(got, want) {
		t.Fatalf("batches %v, want %v", got, want)
	}
}

// A held batch that does not fill is proposed when its window ends.
func TestBatcherHoldEndsWithWindow(t *testing.T) {
	clock := &stepClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), step: time.Millisecond}
	commit, batches := recordBatches()
	b := batcher{window: 30 * time.Millisecond, now: clock.now, commit: commit}
	done := make(chan error, 4)
	far := time.Now().Add(time.Minute)

	b.addAsync(LeaseCAS{}, far, func(err error) { done <- err })
	waitOutcomes(t, done, 1)
	for range 3 {
		b.addAsync(LeaseCAS{}, far, func(err error) { done <- err })
	}
	waitOutcomes(t, done, 3)
	if got, want := batches(), []int{1, 3}; !slices.Equal(got, want) {
		t.Fatalf("batches %v, want %v", got, want)
	}
}
