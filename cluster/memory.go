package cluster

import (
	"context"
	"crypto/rand"
	"sync"
)

// memoryProposer applies commands directly, in order, with no raft. It
// runs the same encode → decode → apply path as a real node, so a package
// tested against it exercises the real FSM.
type memoryProposer struct {
	mu    sync.Mutex
	s     *Store
	index uint64
}

func (m *memoryProposer) propose(ctx context.Context, data []byte) (applyResult, error) {
	if err := ctx.Err(); err != nil {
		return applyResult{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.index++
	return m.s.applyEntry(m.index, data), nil
}

func (m *memoryProposer) isLeader() bool { return true }

// NewMemory returns a store that is its own always-leader, kept only in
// memory, with a random seal key. It is meant for tests of packages that
// read and write the store.
func NewMemory() *Store {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		panic(err)
	}
	sl, err := newSealer(key)
	if err != nil {
		panic(err)
	}
	s := newStore(sl)
	s.proposer = &memoryProposer{s: s}
	return s
}
