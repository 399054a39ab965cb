package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Config says how to open a node.
type Config struct {
	ID      string
	DataDir string
	// RaftBind is the TCP address raft listens on. Empty means a
	// single-node cluster that never talks to anyone.
	RaftBind string
	Logger   *slog.Logger
}

// Member is one server in the raft configuration.
type Member struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Role    string `json:"role"` // leader | follower | candidate | unknown
	Voter   bool   `json:"voter"`
	Leader  bool   `json:"leader"`
}

// Node is a raft member holding a Store.
type Node struct {
	Store  *Store
	raft   *raft.Raft
	stores *raftStores
	trans  raft.Transport
	id     string
	log    *slog.Logger
}

// raftProposer commits through the local raft instance. It is the seam a
// follower-forwarding proposer will wrap.
type raftProposer struct{ r *raft.Raft }

func (p raftProposer) propose(ctx context.Context, data []byte) (applyResult, error) {
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return applyResult{}, context.DeadlineExceeded
		}
	}
	f := p.r.Apply(data, timeout)
	if err := f.Error(); err != nil {
		return applyResult{}, err
	}
	res, _ := f.Response().(applyResult)
	return res, nil
}

func (p raftProposer) isLeader() bool { return p.r.State() == raft.Leader }

// Open starts (or restarts) a node in cfg.DataDir. A node with no existing
// raft state bootstraps a cluster of one.
func Open(cfg Config) (*Node, error) {
	if cfg.ID == "" {
		return nil, errors.New("node id is required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	key, err := loadOrCreateSealKey(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	sl, err := newSealer(key)
	if err != nil {
		return nil, err
	}
	store := newStore(sl)

	raftDir := filepath.Join(cfg.DataDir, "raft")
	if err := os.MkdirAll(raftDir, 0o700); err != nil {
		return nil, fmt.Errorf("raft dir: %w", err)
	}
	stores, err := openRaftStores(raftDir)
	if err != nil {
		return nil, err
	}
	logs, err := raft.NewLogCache(512, stores.log)
	if err != nil {
		stores.Close()
		return nil, fmt.Errorf("raft log cache: %w", err)
	}
	hlog := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: os.Stderr})
	snaps, err := raft.NewFileSnapshotStoreWithLogger(raftDir, 2, hlog)
	if err != nil {
		stores.Close()
		return nil, fmt.Errorf("snapshot store: %w", err)
	}

	var trans raft.Transport
	addr := raft.ServerAddress("local:" + cfg.ID)
	if cfg.RaftBind != "" {
		tcpAddr, err := net.ResolveTCPAddr("tcp", cfg.RaftBind)
		if err != nil {
			stores.Close()
			return nil, fmt.Errorf("raft address %q: %w", cfg.RaftBind, err)
		}
		tt, err := raft.NewTCPTransportWithLogger(cfg.RaftBind, tcpAddr, 3, 10*time.Second, hlog)
		if err != nil {
			stores.Close()
			return nil, fmt.Errorf("raft transport: %w", err)
		}
		trans, addr = tt, tt.LocalAddr()
	} else {
		_, trans = raft.NewInmemTransport(addr)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = hlog
	// Single-node: the library's 1 s timeouts only delay the first election.
	rc.SnapshotThreshold = 8192
	rc.TrailingLogs = 10240

	has, err := raft.HasExistingState(logs, stores.stable, snaps)
	if err != nil {
		stores.Close()
		return nil, fmt.Errorf("raft state: %w", err)
	}
	if !has {
		boot := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: addr, Suffrage: raft.Voter}}}
		if err := raft.BootstrapCluster(rc, logs, stores.stable, snaps, trans, boot); err != nil {
			stores.Close()
			return nil, fmt.Errorf("bootstrap: %w", err)
		}
		log.Info("bootstrapped a new cluster of one", "node", cfg.ID)
	}
	r, err := raft.NewRaft(rc, fsm{store}, logs, stores.stable, snaps, trans)
	if err != nil {
		stores.Close()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	store.proposer = raftProposer{r}
	return &Node{Store: store, raft: r, stores: stores, trans: trans, id: cfg.ID, log: log}, nil
}

// WaitLeader blocks until the cluster has a leader and, if this node is
// it, until every earlier entry is applied (so reads are current).
func (n *Node) WaitLeader(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if addr, _ := n.raft.LeaderWithID(); addr != "" {
			if n.raft.State() == raft.Leader {
				return n.raft.Barrier(10 * time.Second).Error()
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for a raft leader: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// ID is this node's id.
func (n *Node) ID() string { return n.id }

// State is this node's raft role, lower-case.
func (n *Node) State() string { return roleName(n.raft.State()) }

// Leader returns the leader's id ("" when there is none).
func (n *Node) Leader() string {
	_, id := n.raft.LeaderWithID()
	return string(id)
}

// Members lists the raft configuration.
func (n *Node) Members() ([]Member, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft configuration: %w", err)
	}
	_, leader := n.raft.LeaderWithID()
	var out []Member
	for _, s := range f.Configuration().Servers {
		m := Member{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter, Leader: s.ID == leader}
		switch {
		case m.Leader:
			m.Role = "leader"
		case string(s.ID) == n.id:
			m.Role = roleName(n.raft.State())
		default:
			m.Role = "follower"
		}
		out = append(out, m)
	}
	return out, nil
}

// Stats exposes raft's counters for metrics.
func (n *Node) Stats() map[string]string { return n.raft.Stats() }

// Snapshot asks raft to take a snapshot now.
func (n *Node) Snapshot() error { return n.raft.Snapshot().Error() }

// Close hands leadership off when there is someone to take it, then stops
// raft and closes the log.
func (n *Node) Close() error {
	if n.raft.State() == raft.Leader {
		if m, err := n.Members(); err == nil && len(m) > 1 {
			_ = n.raft.LeadershipTransfer().Error()
		}
	}
	err := n.raft.Shutdown().Error()
	if c, ok := n.trans.(interface{ Close() error }); ok {
		c.Close()
	}
	if cerr := n.stores.Close(); err == nil {
		err = cerr
	}
	return err
}

func roleName(s raft.RaftState) string {
	switch s {
	case raft.Leader:
		return "leader"
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	case raft.Shutdown:
		return "shutdown"
	}
	return "unknown"
}
