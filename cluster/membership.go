package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// joinedMark, in the credentials directory, says they were granted by a
// cluster this node joined rather than made by this node as founder.
const joinedMark = "joined"

// Roles a member plays.
const (
	RoleVoter   = "voter"
	RoleWitness = "witness"
)

// joinRequest is a newcomer's application for membership.
type joinRequest struct {
	Secret  []byte `json:"secret"`
	ID      string `json:"id"`
	Address string `json:"address"`
	Role    string `json:"role"`
	CSR     []byte `json:"csr"`
}

type joinResponse struct {
	Error string     `json:"error,omitempty"`
	Retry bool       `json:"retry,omitempty"` // the refusal may pass later (no leader yet)
	Grant *joinGrant `json:"grant,omitempty"`
}

// handleJoin admits a newcomer: any full member checks the token and signs
// its certificate; the leader adds it to raft as a non-voter. It becomes a
// voter only once it has caught up (see promote).
func (n *Node) handleJoin(req joinRequest) joinResponse {
	if n.pki.joinSecret == nil {
		return joinResponse{Error: "this member cannot admit members (a witness holds no join secret); join a full member"}
	}
	if !n.pki.checkSecret(joinToken{secret: req.Secret}) {
		return joinResponse{Error: "join token is not valid for this cluster"}
	}
	if req.ID == "" || req.Address == "" {
		return joinResponse{Error: "join: id and address are required"}
	}
	if req.Role != RoleVoter && req.Role != RoleWitness {
		return joinResponse{Error: fmt.Sprintf("join: role %q is not voter or witness", req.Role)}
	}
	certPEM, err := n.pki.issue(req.CSR)
	if err != nil {
		return joinResponse{Error: err.Error()}
	}
	if _, err := n.toLeader(context.Background(), rpcRequest{Op: "add", ID: req.ID, Address: req.Address}, forwardHold); err != nil {
		return joinResponse{Error: fmt.Sprintf("adding %s: %v", req.ID, err), Retry: errors.Is(err, errNoLeader)}
	}
	g := &joinGrant{CA: string(n.pki.caPEM), Cert: string(certPEM)}
	if req.Role == RoleVoter {
		caKey, err := marshalKeyPEM(n.pki.caKey)
		if err != nil {
			return joinResponse{Error: err.Error()}
		}
		g.CAKey, g.JoinSecret, g.SealKey = string(caKey), n.pki.joinSecret, n.sealKey
	}
	n.log.Info("admitted a cluster member", "id", req.ID, "address", req.Address, "role", req.Role)
	return joinResponse{Grant: g}
}

// joinCluster asks each address in turn to admit this node, until one
// does or the refusal is final, and stores the credentials it is given.
func joinCluster(cfg Config) (*pki, error) {
	tok, err := parseToken(cfg.JoinToken)
	if err != nil {
		return nil, err
	}
	key, csr, err := newMemberKey(cfg.ID, cfg.Role)
	if err != nil {
		return nil, err
	}
	keyPEM, err := marshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	req := joinRequest{Secret: tok.secret, ID: cfg.ID, Address: cfg.RaftBind, Role: cfg.Role, CSR: csr}
	deadline := time.Now().Add(cfg.joinTimeout())
	for attempt := 0; ; attempt++ {
		var lastErr error
		for _, addr := range cfg.Join {
			var resp joinResponse
			err := call(addr, connJoin, joinTLS(tok.caHash), req, &resp)
			switch {
			case errors.Is(err, errWrongCluster):
				return nil, fmt.Errorf("join %s: %w (a token from another cluster, or not that member)", addr, err)
			case err != nil:
				lastErr = fmt.Errorf("join %s: %w", addr, err)
			case resp.Grant != nil:
				if err := writePKI(cfg.DataDir, *resp.Grant, keyPEM); err != nil {
					return nil, err
				}
				// The mark keeps a later start from founding a cluster of
				// its own with these credentials.
				if err := writeFileAtomic(pkiPath(cfg.DataDir, joinedMark), []byte(addr+"\n"), 0o600); err != nil {
					return nil, err
				}
				p, ok, err := loadPKI(cfg.DataDir)
				if err != nil || !ok {
					return nil, fmt.Errorf("join %s: reading the credentials it granted: %v", addr, err)
				}
				cfg.Logger.Info("joined the cluster", "via", addr, "role", cfg.Role)
				return p, nil
			case resp.Retry:
				lastErr = fmt.Errorf("join %s: %s", addr, resp.Error)
			default:
				return nil, fmt.Errorf("join %s: refused: %s", addr, resp.Error)
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no member admitted this node within %s: %w", cfg.joinTimeout(), lastErr)
		}
		if attempt%5 == 0 {
			cfg.Logger.Warn("waiting to join the cluster", "err", lastErr)
		}
		time.Sleep(time.Second)
	}
}

// addNonvoter puts a newcomer into the raft configuration. Joining is
// idempotent: a member that joins again with the same address keeps its
// place; one that comes back at a new address replaces its old entry.
func (n *Node) addNonvoter(id, addr string) error {
	cfg, err := n.configuration()
	if err != nil {
		return err
	}
	for _, s := range cfg.Servers {
		switch {
		case string(s.ID) == id && string(s.Address) == addr:
			return nil
		case string(s.ID) == id || string(s.Address) == addr:
			if err := n.raft.RemoveServer(s.ID, 0, 10*time.Second).Error(); err != nil {
				return fmt.Errorf("removing the stale entry of %s: %w", s.ID, err)
			}
		}
	}
	return n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 10*time.Second).Error()
}

// A non-voter counts as ready for promotion while it keeps reporting that
// it has caught up.
const readyFor = 6 * time.Second

// promote makes caught-up non-voters voters — but never into a voting set
// of exactly two, which stops on the loss of either member. A second full
// box waits, as a non-voter that already holds every record, for a
// witness (or third box) to join; then both are promoted together.
func (n *Node) promote(id string) (string, error) {
	cfg, err := n.configuration()
	if err != nil {
		return "", err
	}
	n.readyMu.Lock()
	defer n.readyMu.Unlock()
	n.ready[id] = time.Now()
	voters := 0
	var pending []raft.Server
	for _, s := range cfg.Servers {
		switch {
		case s.Suffrage == raft.Voter:
			voters++
		case time.Since(n.ready[string(s.ID)]) < readyFor:
			pending = append(pending, s)
		}
	}
	if len(pending) == 0 {
		return "already a voter", nil
	}
	if voters+len(pending) == 2 {
		return "caught up; stays a non-voter until a third member joins: a voting set of exactly two stops when either member fails (add a witness: node.cluster.role: witness)", nil
	}
	for _, s := range pending {
		if err := n.raft.AddVoter(s.ID, s.Address, 0, 10*time.Second).Error(); err != nil {
			return "", fmt.Errorf("promoting %s: %w", s.ID, err)
		}
		delete(n.ready, string(s.ID))
		n.log.Info("promoted a member to voter", "id", s.ID)
	}
	return "promoted", nil
}

// ErrTwoVoters refuses a change that would leave exactly two voters.
var ErrTwoVoters = errors.New("that would leave a voting set of exactly two, which stops when either member fails; add a member first (a witness is enough), or force it")

func (n *Node) removeMember(id string, force bool) (string, error) {
	cfg, err := n.configuration()
	if err != nil {
		return "", err
	}
	voters, found, isVoter := 0, false, false
	for _, s := range cfg.Servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
		if string(s.ID) == id {
			found, isVoter = true, s.Suffrage == raft.Voter
		}
	}
	if !found {
		return "", fmt.Errorf("member %q: %w", id, ErrNotFound)
	}
	if isVoter && voters-1 == 2 && !force {
		return "", fmt.Errorf("removing %s: %w", id, ErrTwoVoters)
	}
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, 10*time.Second).Error(); err != nil {
		return "", fmt.Errorf("removing %s: %w", id, err)
	}
	n.log.Info("removed a cluster member", "id", id)
	return "removed", nil
}

// Remove takes a member out of the cluster, through the leader.
func (n *Node) Remove(ctx context.Context, id string, force bool) error {
	_, err := n.toLeader(ctx, rpcRequest{Op: "remove", ID: id, Force: force}, forwardHold)
	return err
}

func (n *Node) configuration() (raft.Configuration, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return raft.Configuration{}, fmt.Errorf("raft configuration: %w", err)
	}
	return f.Configuration(), nil
}

// Info is this member's own view of itself.
func (n *Node) Info() MemberInfo {
	var lc time.Duration
	if n.raft.State() != raft.Leader {
		if t := n.raft.LastContact(); !t.IsZero() {
			lc = time.Since(t)
		}
	}
	term, _ := strconv.ParseUint(n.raft.Stats()["term"], 10, 64)
	return MemberInfo{
		ID: n.id, Role: n.role, State: roleName(n.raft.State()),
		AppliedIndex: n.raft.AppliedIndex(), CommitIndex: n.raft.CommitIndex(),
		LastContact: lc, Term: term,
	}
}

// housekeeping runs a member's duties: ask to be promoted once caught
// up, hand leadership on when a witness holds it, and keep the picture of
// the other members fresh.
func (n *Node) housekeeping() {
	defer close(n.houseDone)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-n.shutdownCh:
			return
		case <-t.C:
		}
		n.askPromotion()
		n.shedWitnessLeadership()
		n.probePeers()
	}
}

func (n *Node) askPromotion() {
	cfg, err := n.configuration()
	if err != nil {
		return
	}
	for _, s := range cfg.Servers {
		if string(s.ID) != n.id || s.Suffrage == raft.Voter {
			continue
		}
		caughtUp := n.raft.AppliedIndex() >= n.raft.CommitIndex() && time.Since(n.raft.LastContact()) < 2*time.Second
		if !caughtUp {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		resp, err := n.toLeader(ctx, rpcRequest{Op: "promote", ID: n.id}, 2*time.Second)
		cancel()
		if err == nil && resp.Detail != n.lastPromote {
			n.log.Info("cluster membership", "detail", resp.Detail)
			n.lastPromote = resp.Detail
		}
	}
}

// followLeadership hands leadership on the moment a witness wins it;
// housekeeping retries if that transfer fails.
func (n *Node) followLeadership(ch <-chan bool) {
	for {
		select {
		case <-n.shutdownCh:
			return
		case leader := <-ch:
			if leader {
				n.shedWitnessLeadership()
			}
		}
	}
}

// A witness must not stay leader: it runs no DHCP, so while it leads
// nobody answers clients. It hands leadership to the full member that
// answers now and has applied the most; raft's own choice (the most
// up-to-date follower) may be the member whose failure made the witness
// leader, and a transfer to it only times out.
func (n *Node) shedWitnessLeadership() {
	if n.role != RoleWitness || n.raft.State() != raft.Leader {
		return
	}
	if !n.transferring.CompareAndSwap(false, true) {
		return
	}
	defer n.transferring.Store(false)
	f := n.raft.LeadershipTransfer()
	if s, ok := n.liveSuccessor(); ok {
		f = n.raft.LeadershipTransferToServer(s.ID, s.Address)
	}
	if err := f.Error(); err != nil {
		n.log.Warn("witness could not hand leadership on", "err", err)
		return
	}
	n.log.Info("witness handed leadership to a full member")
}

// liveSuccessor asks every other voter for its state, briefly, and picks
// the one that answered with the highest applied index.
func (n *Node) liveSuccessor() (raft.Server, bool) {
	cfg, err := n.configuration()
	if err != nil || n.client == nil {
		return raft.Server{}, false
	}
	type answer struct {
		s    raft.Server
		info *MemberInfo
	}
	answers := make(chan answer)
	asked := 0
	for _, s := range cfg.Servers {
		if string(s.ID) == n.id || s.Suffrage != raft.Voter {
			continue
		}
		asked++
		go func(s raft.Server) {
			var resp rpcResponse
			if err := callTimeout(string(s.Address), connRPC, n.client, rpcRequest{Op: "info"}, &resp, 300*time.Millisecond); err != nil {
				resp.Info = nil
			}
			answers <- answer{s, resp.Info}
		}(s)
	}
	var best raft.Server
	var bestApplied uint64
	found := false
	for range asked {
		a := <-answers
		if a.info == nil || a.info.Role == RoleWitness {
			continue
		}
		if !found || a.info.AppliedIndex > bestApplied {
			best, bestApplied, found = a.s, a.info.AppliedIndex, true
		}
	}
	return best, found
}

// peerStatus is what this member last heard from another.
type peerStatus struct {
	info MemberInfo
	seen time.Time
	err  string
}

func (n *Node) probePeers() {
	cfg, err := n.configuration()
	if err != nil || n.client == nil {
		return
	}
	var wg sync.WaitGroup
	for _, s := range cfg.Servers {
		if string(s.ID) == n.id {
			continue
		}
		wg.Add(1)
		go func(s raft.Server) {
			defer wg.Done()
			var resp rpcResponse
			err := call(string(s.Address), connRPC, n.client, rpcRequest{Op: "info"}, &resp)
			n.peersMu.Lock()
			defer n.peersMu.Unlock()
			ps := n.peers[string(s.ID)]
			if err == nil && resp.Info != nil {
				ps = peerStatus{info: *resp.Info, seen: time.Now()}
			} else if err != nil {
				ps.err = err.Error()
			}
			n.peers[string(s.ID)] = ps
		}(s)
	}
	wg.Wait()
}

// Live reports whether member id answered recently (always true for this
// node itself).
func (n *Node) Live(id string) bool {
	if id == n.id {
		return true
	}
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	return time.Since(n.peers[id].seen) < 3*time.Second
}

// Token is the join token a new member needs ("" on a witness or a
// single-node box).
func (n *Node) Token() string {
	if n.pki == nil {
		return ""
	}
	return n.pki.Token()
}

// Leave takes this member out of the cluster. A leader hands leadership
// on first, so the removal is committed by the members that stay.
func (n *Node) Leave(ctx context.Context, force bool) error {
	if n.raft.State() == raft.Leader {
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			return fmt.Errorf("handing leadership on before leaving: %w", err)
		}
	}
	return n.Remove(ctx, n.id, force)
}

// TokenFromDir reads the join token of the member whose data directory
// is dataDir, without a running node.
func TokenFromDir(dataDir string) (string, error) {
	p, ok, err := loadPKI(dataDir)
	switch {
	case err != nil:
		return "", err
	case !ok:
		return "", fmt.Errorf("%s holds no cluster credentials: is node.cluster set and has the box started once?", dataDir)
	case p.joinSecret == nil:
		return "", errors.New("this member holds no join secret (a witness): ask a full member")
	}
	return p.Token(), nil
}

// Join obtains cluster credentials for cfg's node before its first start,
// so that serve starts it as a member even with no join list in its
// config.
func Join(cfg Config) error {
	if cfg.Role == "" {
		cfg.Role = RoleVoter
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if _, ok, _ := loadPKI(cfg.DataDir); ok {
		return fmt.Errorf("%s already holds cluster credentials", cfg.DataDir)
	}
	if _, err := joinCluster(cfg); err != nil {
		return err
	}
	return nil
}
