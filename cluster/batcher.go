package cluster

import (
	"context"
	"sync"
	"time"
)

// A DHCP storm asks for thousands of lease commits a second. One raft
// entry per lease costs a log write, an FSM dispatch and a future each;
// the batcher instead gathers the LeaseCAS calls that arrive while earlier
// ones are committing and proposes them as one LeaseBatch. Nobody waits
// for a batch to fill: a lone request is proposed at once, and batches
// grow only as fast as commits queue up.
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
)

type batchItem struct {
	cas      LeaseCAS
	ctx      context.Context // add's caller's; nil from addAsync
	deadline time.Time       // zero: batchTimeout bounds it
	done     func(error)     // called once, on the committer's goroutine
}

// batcher groups concurrent LeaseCAS commands. Its zero value, with commit
// set, is ready.
type batcher struct {
	commit    func(ctx context.Context, items []LeaseCAS) ([]error, error)
	idleAfter time.Duration // 0 means defaultIdle

	mu      sync.Mutex
	queue   []*batchItem
	running int // committers alive, idle ones included
	idle    int // committers waiting on wake
	wake    chan struct{}
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

func (b *batcher) enqueue(it *batchItem) {
	b.mu.Lock()
	b.queue = append(b.queue, it)
	switch {
	case b.idle > 0:
		b.idle--
		b.mu.Unlock()
		b.wake <- struct{}{}
	case b.running < batchCommitters:
		b.running++
		if b.wake == nil {
			b.wake = make(chan struct{})
		}
		b.mu.Unlock()
		go b.drain()
	default:
		b.mu.Unlock()
	}
}

// drain proposes batches while there are any, then waits to be woken,
// exiting after idleAfter without work. Every idle-- in add is paired
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
		batch := make([]*batchItem, n)
		copy(batch, b.queue)
		b.queue = append(b.queue[:0], b.queue[n:]...)
		b.mu.Unlock()
		b.propose(batch)
	}
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
