// Package cluster is branchbox's one state store: typed commands replicated
// with hashicorp/raft, applied to an in-memory state that every read is
// served from. It knows nothing of DHCP, DNS or AMT beyond the shapes of
// the records it keeps.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"
)

// proposer gets an encoded command committed and applied. It keeps what
// Apply answered (the applyResult: nil, ErrConflict, …) apart from a
// failure to commit at all (the error). A single raft node, a raft
// follower forwarding to its leader, and the in-memory test store are all
// proposers.
type proposer interface {
	propose(ctx context.Context, data []byte) (applyResult, error)
	isLeader() bool
}

// Store is the replicated state with its read indexes.
type Store struct {
	mu       sync.RWMutex
	st       *state
	applied  uint64
	sealer   *sealer
	proposer proposer

	watchMu  sync.Mutex
	watchers map[chan struct{}]bool // true: lease changes too

	// leaseList is the sorted lease list handed to readers, rebuilt only
	// after a lease changed; nil means stale. Readers share it, so it is
	// never modified in place.
	leaseMu   sync.Mutex
	leaseList []Lease
	// leaseFeed lists the lease changes applied, under mu.
	leaseFeed leaseFeed

	leaseBatch batcher
}

func newStore(s *sealer) *Store {
	st := &Store{st: newState(), sealer: s, watchers: map[chan struct{}]bool{}}
	st.leaseBatch.commit = st.commitBatch
	return st
}

// Apply commits a command through the cluster and returns its business
// outcome (nil, or an error wrapping ErrConflict, ErrNotFound, …).
// Concurrent LeaseCAS calls share raft entries (see batcher.go).
func (s *Store) Apply(ctx context.Context, cmd Command) error {
	if c, ok := cmd.(LeaseCAS); ok {
		return s.leaseBatch.add(ctx, c)
	}
	data, err := encodeCommand(cmd)
	if err != nil {
		return err
	}
	res, err := s.proposer.propose(ctx, data)
	if err != nil {
		return fmt.Errorf("commit %T: %w", cmd, err)
	}
	return res.err
}

// ApplyLease is Apply for a LeaseCAS that does not wait: c joins the next
// lease batch and done receives the same outcome Apply would return, on a
// committing goroutine, once the batch commits or fails. While leases
// arrive steadily a batch is held open up to 2 ms to share its commit
// (see batcher.go). deadline bounds the wait to be proposed; once
// proposed, the outcome waits for raft (commit, lost leadership or
// shutdown). done must not block; it holds up the rest of its batch.
func (s *Store) ApplyLease(c LeaseCAS, deadline time.Time, done func(error)) {
	s.leaseBatch.addAsync(c, deadline, done)
}

// commitBatch proposes items as one LeaseBatch and returns each outcome.
func (s *Store) commitBatch(ctx context.Context, items []LeaseCAS) ([]error, error) {
	data, err := encodeCommand(LeaseBatch{Items: items})
	if err != nil {
		return nil, err
	}
	res, err := s.proposer.propose(ctx, data)
	if err != nil {
		return nil, fmt.Errorf("commit %d leases: %w", len(items), err)
	}
	if res.err != nil {
		return nil, res.err
	}
	if len(res.items) != len(items) {
		return nil, fmt.Errorf("commit %d leases: %d outcomes", len(items), len(res.items))
	}
	return res.items, nil
}

// IsLeader reports whether this node may act for the cluster (answer DHCP,
// run expiry sweeps).
func (s *Store) IsLeader() bool { return s.proposer.isLeader() }

// Seal encrypts a secret for storage.
func (s *Store) Seal(plain []byte) (Sealed, error) { return s.sealer.seal(plain) }

// Unseal decrypts a value sealed by this cluster.
func (s *Store) Unseal(v Sealed) ([]byte, error) { return s.sealer.unseal(v) }

// Watch returns a channel that receives (coalesced) after every applied
// change, and a func that stops the subscription.
func (s *Store) Watch() (<-chan struct{}, func()) { return s.watch(true) }

// WatchConfig is Watch without lease changes. Leases change thousands of
// times a second in a DHCP storm, and a watcher that rebuilds from sites
// or profiles would otherwise wake, and rebuild, for every commit.
func (s *Store) WatchConfig() (<-chan struct{}, func()) { return s.watch(false) }

func (s *Store) watch(leases bool) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.watchMu.Lock()
	s.watchers[ch] = leases
	s.watchMu.Unlock()
	return ch, func() {
		s.watchMu.Lock()
		delete(s.watchers, ch)
		s.watchMu.Unlock()
	}
}

// notify signals the watchers; onlyLeases says the change touched leases
// and nothing else.
func (s *Store) notify(onlyLeases bool) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	for ch, leases := range s.watchers {
		if onlyLeases && !leases {
			continue
		}
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// applyEntry is the FSM's Apply: decode, run against the state, notify.
func (s *Store) applyEntry(index uint64, data []byte) applyResult {
	cmd, err := decodeCommand(data)
	if errors.Is(err, errSkip) {
		return applyResult{}
	}
	if err != nil {
		// A command this node cannot decode would make its state diverge
		// from the others'; stopping is the only safe answer.
		panic(fmt.Sprintf("raft entry %d: %v", index, err))
	}
	var res applyResult
	s.mu.Lock()
	if b, ok := cmd.(*LeaseBatch); ok {
		res.items = s.st.applyBatch(b)
	} else {
		res.err = s.st.apply(cmd)
	}
	s.applied = index
	for _, ip := range s.st.changed {
		s.leaseFeed.add(ip)
	}
	s.st.changed = s.st.changed[:0]
	onlyLeases := false
	switch cmd.(type) {
	case *LeaseCAS, *LeaseBatch, *LeaseRelease, *LeaseExpire:
		onlyLeases = true
		s.leaseMu.Lock()
		s.leaseList = nil
		s.leaseMu.Unlock()
	}
	s.mu.Unlock()
	s.notify(onlyLeases)
	return res
}

// waitApplied returns once the command at raft index idx is applied
// here, or when ctx ends (or 10 s pass).
func (s *Store) waitApplied(ctx context.Context, idx uint64) error {
	if s.AppliedIndex() >= idx {
		return nil
	}
	changed, stop := s.Watch()
	defer stop()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for s.AppliedIndex() < idx {
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout.C:
			return errors.New("timed out")
		}
	}
	return nil
}

// AppliedIndex is the raft index of the last applied command.
func (s *Store) AppliedIndex() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.applied
}

// Sites lists every site, sorted by name.
func (s *Store) Sites() []Site {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Site, 0, len(s.st.Sites))
	for _, v := range s.st.Sites {
		out = append(out, cloneSite(v))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Site returns one site by name.
func (s *Store) Site(name string) (Site, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.st.Sites[name]
	return cloneSite(v), ok
}

// Profiles lists every profile, sorted by name.
func (s *Store) Profiles() []Profile {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Profile, 0, len(s.st.Profiles))
	for _, v := range s.st.Profiles {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Profile returns one profile by name.
func (s *Store) Profile(name string) (Profile, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.st.Profiles[name]
	return v, ok
}

// Devices lists every device, sorted by UUID.
func (s *Store) Devices() []Device {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Device, 0, len(s.st.Devices))
	for _, v := range s.st.Devices {
		out = append(out, cloneDevice(v))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UUID < out[j].UUID })
	return out
}

// Device returns one device by UUID.
func (s *Store) Device(uuid string) (Device, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.st.Devices[uuid]
	return cloneDevice(v), ok
}

// Leases lists every lease in no particular order (SortLeases orders a
// copy for display). The list is shared between callers until the next
// lease change: treat it as read-only. Sorting is left out because the
// DNS lease table re-reads this list several times a second during a
// DHCP storm, and sorting ten thousand leases held up every commit.
func (s *Store) Leases() []Lease {
	s.mu.RLock()
	defer s.mu.RUnlock()
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if s.leaseList == nil {
		out := make([]Lease, 0, len(s.st.Leases))
		for _, v := range s.st.Leases {
			out = append(out, v)
		}
		s.leaseList = out
	}
	return s.leaseList
}

// LeaseChanges returns the addresses whose lease was set, replaced or
// removed since position since, oldest first (one may appear more than
// once), and the position to ask from next time. ok is false when not
// all of those changes are still known (too many since, or the leases
// were replaced by a snapshot): read Leases instead. A reader that keeps
// its own view of the leases, such as the DNS lease table, follows this
// instead of copying every lease after each change.
func (s *Store) LeaseChanges(since uint64) (ips []string, next uint64, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.leaseFeed.since(since, nil)
}

// Lease returns the lease on one address.
func (s *Store) Lease(ip string) (Lease, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.st.Leases[ip]
	return v, ok
}

// OTP returns the one-time password record of a device.
func (s *Store) OTP(uuid string) (OTP, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.st.OTPs[uuid]
	return v, ok
}

// PSK returns a PID/PPS pair by PID.
func (s *Store) PSK(pid string) (PSKPair, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.st.PSKs[pid]
	return v, ok
}

// PSKs lists every PID/PPS pair, sorted by PID.
func (s *Store) PSKs() []PSKPair {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]PSKPair, 0, len(s.st.PSKs))
	for _, v := range s.st.PSKs {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out
}

// Audit returns the newest limit audit entries, oldest first (all when
// limit <= 0).
func (s *Store) Audit(limit int) []AuditEntry {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a := s.st.Audit
	if limit > 0 && len(a) > limit {
		a = a[len(a)-limit:]
	}
	return slices.Clone(a)
}
