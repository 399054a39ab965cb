package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Config says how to open a node.
type Config struct {
	ID      string
	DataDir string
	// RaftBind is the TCP address of the cluster port (raft and member
	// RPC), which other members dial. Empty means a single-node cluster
	// that never talks to anyone.
	RaftBind string
	// Join lists members to ask for admission on first start; empty means
	// this node founds a cluster. JoinToken is the founder's `cluster
	// token`.
	Join      []string
	JoinToken string
	// Role is voter (a full member) or witness (raft only).
	Role string
	// Heartbeat is raft's heartbeat and election timeout (default
	// DefaultHeartbeat); the leader lease is half of it.
	Heartbeat time.Duration
	// OnCommit, when set, is told how long each entry this node proposed
	// as leader took from Apply to committed and applied (metrics).
	OnCommit func(time.Duration)
	// JoinTimeout bounds the first start's wait to be admitted (default 2m).
	JoinTimeout time.Duration
	Logger      *slog.Logger
}

// DefaultHeartbeat suits members on one LAN (round trips well under 10 ms).
const DefaultHeartbeat = 500 * time.Millisecond

func (c Config) joinTimeout() time.Duration {
	if c.JoinTimeout > 0 {
		return c.JoinTimeout
	}
	return 2 * time.Minute
}

// Member is one server in the raft configuration, as this node sees it.
type Member struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Role    string `json:"role"` // leader | follower | candidate | unreachable | unknown
	Voter   bool   `json:"voter"`
	Leader  bool   `json:"leader"`
	// Kind is voter, witness or nonvoter (a member still catching up, or
	// waiting for a third so it is not one of exactly two voters).
	Kind         string `json:"kind"`
	AppliedIndex uint64 `json:"applied_index"`
	// LastContact is how long ago this node last heard from the member
	// (for a follower: how long since it heard from its leader).
	LastContact string `json:"last_contact"`
	Error       string `json:"error,omitempty"`
}

// Node is a raft member holding a Store.
type Node struct {
	Store   *Store
	raft    *raft.Raft
	stores  *raftStores
	trans   raft.Transport
	port    *clusterPort
	local   raftProposer
	pki     *pki        // nil on a single-node box
	client  *tls.Config // dials other members; nil on a single-node box
	sealKey []byte
	id      string
	role    string
	log     *slog.Logger

	shutdownCh chan struct{}
	houseDone  chan struct{}
	closeOnce  sync.Once
	closeErr   error

	transferring atomic.Bool

	readyMu     sync.Mutex
	ready       map[string]time.Time
	lastPromote string

	peersMu sync.Mutex
	peers   map[string]peerStatus
}

// raftProposer commits through the local raft instance; on a follower,
// forwardingProposer wraps it.
type raftProposer struct {
	r        *raft.Raft
	onCommit func(time.Duration)
}

func (p raftProposer) propose(ctx context.Context, data []byte) (applyResult, error) {
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return applyResult{}, context.DeadlineExceeded
		}
	}
	start := time.Now()
	f := p.r.Apply(data, timeout)
	if err := f.Error(); err != nil {
		return applyResult{}, err
	}
	if p.onCommit != nil {
		p.onCommit(time.Since(start))
	}
	res, _ := f.Response().(applyResult)
	res.index = f.Index()
	return res, nil
}

func (p raftProposer) isLeader() bool { return p.r.State() == raft.Leader }

// Open starts (or restarts) a node in cfg.DataDir. A node with no raft
// state founds a cluster (of one, until others join) unless cfg.Join
// names members to join instead.
func Open(cfg Config) (*Node, error) {
	if cfg.ID == "" {
		return nil, errors.New("node id is required")
	}
	if cfg.Role == "" {
		cfg.Role = RoleVoter
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	raftDir := filepath.Join(cfg.DataDir, "raft")
	if err := os.MkdirAll(raftDir, 0o700); err != nil {
		return nil, fmt.Errorf("raft dir: %w", err)
	}
	stores, err := openRaftStores(raftDir)
	if err != nil {
		return nil, err
	}
	n, err := open(cfg, raftDir, stores)
	if err != nil {
		stores.Close()
		return nil, err
	}
	return n, nil
}

func open(cfg Config, raftDir string, stores *raftStores) (*Node, error) {
	log := cfg.Logger
	logs, err := raft.NewLogCache(512, stores.log)
	if err != nil {
		return nil, fmt.Errorf("raft log cache: %w", err)
	}
	hlog := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: os.Stderr})
	snaps, err := raft.NewFileSnapshotStoreWithLogger(raftDir, 2, hlog)
	if err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	has, err := raft.HasExistingState(logs, stores.stable, snaps)
	if err != nil {
		return nil, fmt.Errorf("raft state: %w", err)
	}

	n := &Node{
		stores: stores, id: cfg.ID, role: cfg.Role, log: log,
		shutdownCh: make(chan struct{}), houseDone: make(chan struct{}),
		ready: map[string]time.Time{}, peers: map[string]peerStatus{},
	}
	addr := raft.ServerAddress("local:" + cfg.ID)
	if cfg.RaftBind == "" {
		_, n.trans = raft.NewInmemTransport(addr)
	} else {
		p, ok, err := loadPKI(cfg.DataDir)
		switch {
		case err != nil:
			return nil, err
		case !ok && has:
			return nil, fmt.Errorf("%s holds raft state but no cluster credentials (%s): restore them, or wipe the data dir and join again", cfg.DataDir, filepath.Join(cfg.DataDir, pkiDir))
		case !ok && len(cfg.Join) == 0 && cfg.Role == RoleWitness:
			return nil, errors.New("a witness cannot found a cluster: list the members it joins in node.cluster.join, or run `ctl cluster join` first")
		case !ok && len(cfg.Join) == 0:
			if p, err = newClusterPKI(cfg.DataDir, cfg.ID, cfg.Role); err != nil {
				return nil, err
			}
			log.Info("created the cluster CA and join token (ctl cluster token prints it)")
		case !ok:
			if p, err = joinCluster(cfg); err != nil {
				return nil, err
			}
		}
		n.pki, n.client = p, clientTLS(p)
		if n.port, err = listenClusterPort(cfg.RaftBind, p, log); err != nil {
			return nil, err
		}
		n.port.rpc, n.port.join = n.handleRPC, n.handleJoin
		go n.port.serve()
		n.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream: streamLayer{port: n.port, client: n.client}, MaxPool: 3, Timeout: 10 * time.Second, Logger: hlog,
		})
		addr = n.trans.LocalAddr()
	}

	key, err := loadOrCreateSealKey(cfg.DataDir)
	if err != nil {
		n.closeTransport()
		return nil, err
	}
	sl, err := newSealer(key)
	if err != nil {
		n.closeTransport()
		return nil, err
	}
	n.sealKey = key
	n.Store = newStore(sl)

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = hlog
	rc.SnapshotThreshold = 8192
	rc.TrailingLogs = 10240
	if cfg.RaftBind == "" {
		// A box on its own has no one to hear from: the timeouts only
		// delay its first election, which every service start waits for
		// (1.3 s of an image's boot with the library's 1 s).
		rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = 100*time.Millisecond, 100*time.Millisecond, 50*time.Millisecond
	} else {
		// A follower notices a dead leader between one and about three
		// heartbeat timeouts after its last contact, and the others must
		// notice too before one can win: with the library's 1 s the
		// first DHCP ACK from a new leader came 1.5–5 s after a kill -9
		// here. Half that keeps failover under 3 s on a LAN; members
		// across a WAN set a longer one (node.cluster.heartbeat).
		hb := cfg.Heartbeat
		if hb <= 0 {
			hb = DefaultHeartbeat
		}
		rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = hb, hb, hb/2
	}

	leadership := make(chan bool, 16)
	rc.NotifyCh = leadership
	_, joinedErr := os.Stat(pkiPath(cfg.DataDir, joinedMark))
	if !has && errors.Is(joinedErr, fs.ErrNotExist) {
		boot := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: addr, Suffrage: raft.Voter}}}
		if err := raft.BootstrapCluster(rc, logs, stores.stable, snaps, n.trans, boot); err != nil {
			n.closeTransport()
			return nil, fmt.Errorf("bootstrap: %w", err)
		}
		log.Info("bootstrapped a new cluster", "node", cfg.ID)
	}
	n.raft, err = raft.NewRaft(rc, fsm{n.Store}, logs, stores.stable, snaps, n.trans)
	if err != nil {
		n.closeTransport()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	n.local = raftProposer{r: n.raft, onCommit: cfg.OnCommit}
	if n.port != nil {
		n.Store.proposer = forwardingProposer{n}
		go n.housekeeping()
		go n.followLeadership(leadership)
	} else {
		n.Store.proposer = n.local
		close(n.houseDone)
	}
	return n, nil
}

func (n *Node) closeTransport() {
	if c, ok := n.trans.(interface{ Close() error }); ok {
		c.Close()
	}
	if n.port != nil {
		n.port.Close()
	}
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

// Members lists the raft configuration with what this node last heard
// from each member.
func (n *Node) Members() ([]Member, error) {
	cfg, err := n.configuration()
	if err != nil {
		return nil, err
	}
	_, leader := n.raft.LeaderWithID()
	var out []Member
	for _, s := range cfg.Servers {
		m := Member{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter, Leader: s.ID == leader, Kind: "nonvoter"}
		var info MemberInfo
		var seen time.Time
		if string(s.ID) == n.id {
			info, seen = n.Info(), time.Now()
		} else {
			n.peersMu.Lock()
			ps := n.peers[string(s.ID)]
			n.peersMu.Unlock()
			info, seen, m.Error = ps.info, ps.seen, ps.err
		}
		m.AppliedIndex = info.AppliedIndex
		switch {
		case string(s.ID) == n.id:
			m.Role = info.State
			m.LastContact = info.LastContact.Round(time.Millisecond).String()
		case seen.IsZero():
			m.Role = "unreachable"
			m.LastContact = "never"
		case time.Since(seen) > 3*time.Second:
			m.Role = "unreachable"
			m.LastContact = time.Since(seen).Round(time.Second).String()
		default:
			m.Role = info.State
			m.LastContact = time.Since(seen).Round(time.Millisecond).String()
			m.Error = ""
		}
		if m.Leader {
			m.Role = "leader"
		}
		if m.Voter {
			m.Kind = RoleVoter
			if info.Role == RoleWitness {
				m.Kind = RoleWitness
			}
		}
		out = append(out, m)
	}
	return out, nil
}

// Stats exposes raft's counters for metrics.
func (n *Node) Stats() map[string]string { return n.raft.Stats() }

// Snapshot asks raft to take a snapshot now.
func (n *Node) Snapshot() error { return n.raft.Snapshot().Error() }

// Role is this member's role: voter or witness.
func (n *Node) Role() string { return n.role }

// Close hands leadership off when there is someone to take it, then stops
// raft and closes the log.
func (n *Node) Close() error {
	n.closeOnce.Do(func() { n.closeErr = n.close() })
	return n.closeErr
}

func (n *Node) close() error {
	if n.raft.State() == raft.Leader {
		if cfg, err := n.configuration(); err == nil && len(cfg.Servers) > 1 {
			if err := n.raft.LeadershipTransfer().Error(); err != nil {
				n.log.Warn("leadership transfer before shutdown", "err", err)
			}
		}
	}
	close(n.shutdownCh)
	<-n.houseDone
	err := n.raft.Shutdown().Error()
	n.closeTransport()
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
