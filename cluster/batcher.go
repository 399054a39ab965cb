package cluster

import (
	"context"
	"sync"
	"time"
)

// A DHCP storm asks for thousands of lease commits a second. One raft
// entry per lease costs a log write, an fdatasync, an FSM dispatch and a
// future each; the batcher instead gathers LeaseCAS calls into one
// LeaseBatch. Two things make batches: requests that arrive while earlier
// ones are committing join the next batch, and, while requests arrive
// steadily, a batch is held open for a short window so that more join it.
// Without the window a batch holds what arrived during one fdatasync: at
// 1 000 leases/s that was 1.2 leases a commit, and the write and flush
// were a third of the server's CPU.
const (
	// maxBatch bounds one entry, keeping it well under raft's message
	// sizes and its apply time short.
	maxBatch = 256
	// batchCommitters is how many batches may be in flight at once: one
	// being written while the next is gathered, and one more so raft's
	// own group commit can still join two.
	batchCommitters = 3
	// batchTimeout bounds one batch's commit when its callers set no
	// deadline of their own.
	batchTimeout = 10 * time.Second
	// defaultIdle is how long a committer with nothing to do waits for
	// more before it exits. Committers are kept rather than started per
	// batch because each grows a deep stack (JSON, raft) that a fresh
	// goroutine would have to grow again.
	defaultIdle = 10 * time.Second
	// defaultWindow is the longest a lease waits in a batch held open
	// for more. It adds that much to an ACK at most, against a DHCP
	// client's retransmission timer of seconds.
	defaultWindow = 2 * time.Millisecond
)

type batchItem struct {
	cas      LeaseCAS
	ctx      context.Context // add's caller's; nil from addAsync
	deadline time.Time       // zero: batchTimeout bounds it
	at       time.Time       // queued
	done     func(error)     // called once, on the committer's goroutine
}

// batcher groups concurrent LeaseCAS commands. Its zero value, with commit
// set, is ready.
type batcher struct {
	commit    func(ctx context.Context, items []LeaseCAS) ([]error, error)
	idleAfter time.Duration    // 0 means defaultIdle
	window    time.Duration    // 0 means defaultWindow
	now       func() time.Time // nil means time.Now

	mu      sync.Mutex
	queue   []*batchItem
	running int // committers alive, idle ones included
	idle    int // committers waiting on wake
	wake    chan struct{}
	pace    pace
	// holding is set while one committer keeps the queue open for more;
	// arrivals then wake nobody until the queue could fill a batch, and
	// full tells the holder so.
	holding bool
	full    chan struct{}
}

// add queues c and waits for its own outcome, or for ctx. A caller whose
// ctx ends before its item is proposed is left out of the batch; one whose
// ctx ends after may still see its lease committed, as with any raft
// apply that times out.
func (b *batcher) add(ctx context.Context, c LeaseCAS) error {
	out := make(chan error, 1)
	dl, _ := ctx.Deadline()
	b.enqueue(&batchItem{ctx: ctx, cas: c, deadline: dl, done: func(err error) { out <- err }})
	select {
	case err := <-out:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// addAsync adds c to the next batch and returns at once; done receives its
// outcome on a committer goroutine, after the batch commits or fails, or
// when deadline passes before it is proposed. A caller that must not wait
// (the DHCP read loop) hands its reply to done rather than parking a
// goroutine per lease. done runs before the batch's next caller is told,
// so it must not block.
func (b *batcher) addAsync(c LeaseCAS, deadline time.Time, done func(error)) {
	b.enqueue(&batchItem{cas: c, deadline: deadline, done: done})
}

func (b *batcher) clock() time.Time {
	if b.now != nil {
		return b.now()
	}
	return time.Now()
}

func (b *batcher) holdWindow() time.Duration {
	if b.window == 0 {
		return defaultWindow
	}
	return b.window
}

func (b *batcher) enqueue(it *batchItem) {
	it.at = b.clock()
	b.mu.Lock()
	b.pace.arrive(it.at, b.holdWindow())
	b.queue = append(b.queue, it)
	if b.holding {
		full := len(b.queue) >= maxBatch
		b.mu.Unlock()
		if full {
			select {
			case b.full <- struct{}{}:
			default: // already told
			}
		}
		return
	}
	b.dispatch()
}

// dispatch, called with mu held, which it releases, gets a committer to
// the queue: an idle one woken, or a new one while there are fewer than
// batchCommitters; otherwise a busy one takes the queue when it is done.
func (b *batcher) dispatch() {
	switch {
	case b.idle > 0:
		b.idle--
		b.mu.Unlock()
		b.wake <- struct{}{}
	case b.running < batchCommitters:
		b.running++
		if b.wake == nil {
			b.wake = make(chan struct{})
			b.full = make(chan struct{}, 1)
		}
		b.mu.Unlock()
		go b.drain()
	default:
		b.mu.Unlock()
	}
}

// drain proposes batches while there are any, then waits to be woken,
// exiting after idleAfter without work. Every idle-- in dispatch is paired
// with one send on wake, so a committer that times out exits only if no
// send is owed to the idle committers.
func (b *batcher) drain() {
	idle := b.idleAfter
	if idle == 0 {
		idle = defaultIdle
	}
	timer := time.NewTimer(idle)
	defer timer.Stop()
	for {
		b.mu.Lock()
		n := min(len(b.queue), maxBatch)
		if b.holding {
			n = 0 // the holder proposes what is queued
		}
		if n == 0 {
			b.idle++
			b.mu.Unlock()
			timer.Reset(idle)
			select {
			case <-b.wake:
				continue
			case <-timer.C:
			}
			b.mu.Lock()
			if b.idle > 0 {
				b.idle--
				b.running--
				b.mu.Unlock()
				return
			}
			b.mu.Unlock()
			<-b.wake // a caller took this slot and is sending
			continue
		}
		if n < maxBatch && !b.holding {
			if d := b.pace.hold(b.clock(), b.queue[0].at, b.holdWindow()); d > 0 {
				b.holding = true
				b.mu.Unlock()
				timer.Reset(d)
				select {
				case <-b.full: // possibly left from an earlier hold: this one just ends early
					timer.Stop()
				case <-timer.C:
				}
				b.mu.Lock()
				b.holding = false
				n = min(len(b.queue), maxBatch)
			}
		}
		batch := make([]*batchItem, n)
		copy(batch, b.queue)
		b.queue = append(b.queue[:0], b.queue[n:]...)
		if len(b.queue) > 0 {
			// What arrived past a full batch, or while this committer
			// held the queue and woke nobody, needs a committer of its own.
			b.dispatch()
		} else {
			b.mu.Unlock()
		}
		b.propose(batch)
	}
}

// pace follows how closely lease commits arrive, to tell a steady stream,
// where holding a batch open gathers more, from a lone request, which
// should be proposed at once.
type pace struct {
	last time.Time
	gap  time.Duration // smoothed time between arrivals
}

// arrive records an arrival at now. A gap is counted as at most four
// windows, so that one request after a long quiet is judged lone, and a
// few quick ones after it are judged steady again.
func (p *pace) arrive(now time.Time, window time.Duration) {
	g := 4 * window
	if !p.last.IsZero() {
		g = min(max(now.Sub(p.last), 0), g)
	}
	p.last = now
	p.gap += (g - p.gap) / 4
}

// hold says how much longer a batch whose oldest item arrived at first
// should stay open at now: until first+window while arrivals are closer
// than a window (so at least one more is expected), else not at all.
func (p *pace) hold(now, first time.Time, window time.Duration) time.Duration {
	if window <= 0 || p.gap >= window {
		return 0
	}
	return max(first.Add(window).Sub(now), 0)
}

func (b *batcher) propose(batch []*batchItem) {
	live := batch[:0]
	items := make([]LeaseCAS, 0, len(batch))
	now := time.Now()
	deadline := now.Add(batchTimeout)
	for _, it := range batch {
		if it.ctx != nil && it.ctx.Err() != nil {
			it.done(it.ctx.Err())
			continue
		}
		if !it.deadline.IsZero() {
			if !now.Before(it.deadline) {
				it.done(context.DeadlineExceeded)
				continue
			}
			if it.deadline.Before(deadline) {
				deadline = it.deadline
			}
		}
		live = append(live, it)
		items = append(items, it.cas)
	}
	if len(live) == 0 {
		return
	}
	// The earliest deadline bounds the batch: no caller is kept waiting
	// past its own.
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	outs, err := b.commit(ctx, items)
	for i, it := range live {
		if err != nil {
			it.done(err)
		} else {
			it.done(outs[i])
		}
	}
}
