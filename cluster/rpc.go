package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// rpcRequest is one member-to-member call on the cluster port.
type rpcRequest struct {
	Op      string `json:"op"` // apply | add | promote | remove | info
	Data    []byte `json:"data,omitempty"`
	ID      string `json:"id,omitempty"`
	Address string `json:"address,omitempty"`
	Role    string `json:"role,omitempty"`
	Force   bool   `json:"force,omitempty"`
}

type rpcResponse struct {
	Error   string `json:"error,omitempty"`
	ErrKind string `json:"err_kind,omitempty"`
	// NotLeader says the request needs the leader and this member is not
	// it; Leader is where to go instead, when known.
	NotLeader bool        `json:"not_leader,omitempty"`
	Leader    string      `json:"leader,omitempty"`
	Result    *wireResult `json:"result,omitempty"`
	Info      *MemberInfo `json:"info,omitempty"`
	Detail    string      `json:"detail,omitempty"`
}

// wireResult is an applyResult on the wire. Business errors keep their
// kind, so errors.Is(err, ErrConflict) holds on the forwarding member too.
type wireResult struct {
	Err   *wireErr   `json:"err,omitempty"`
	Items []*wireErr `json:"items,omitempty"`
	Index uint64     `json:"index"`
}

type wireErr struct {
	Kind string `json:"kind,omitempty"`
	Msg  string `json:"msg"`
}

var errKinds = map[string]error{
	"conflict": ErrConflict, "not-found": ErrNotFound, "consumed": ErrConsumed, "expired": ErrExpired,
	"two-voters": ErrTwoVoters,
}

func toWireErr(err error) *wireErr {
	if err == nil {
		return nil
	}
	w := &wireErr{Msg: err.Error()}
	for k, e := range errKinds {
		if errors.Is(err, e) {
			w.Kind = k
		}
	}
	return w
}

// remoteErr is a business error that came back from the leader.
type remoteErr struct {
	msg  string
	kind error
}

func (e *remoteErr) Error() string { return e.msg }
func (e *remoteErr) Unwrap() error { return e.kind }

func (w *wireErr) err() error {
	if w == nil {
		return nil
	}
	return &remoteErr{msg: w.Msg, kind: errKinds[w.Kind]}
}

func toWire(r applyResult) *wireResult {
	w := &wireResult{Err: toWireErr(r.err), Index: r.index}
	for _, e := range r.items {
		w.Items = append(w.Items, toWireErr(e))
	}
	return w
}

func (w *wireResult) result() applyResult {
	if w == nil {
		return applyResult{}
	}
	r := applyResult{err: w.Err.err(), index: w.Index}
	for _, e := range w.Items {
		r.items = append(r.items, e.err())
	}
	return r
}

// MemberInfo is what a member says about itself.
type MemberInfo struct {
	ID           string        `json:"id"`
	Role         string        `json:"role"` // voter | witness
	State        string        `json:"state"`
	AppliedIndex uint64        `json:"applied_index"`
	CommitIndex  uint64        `json:"commit_index"`
	LastContact  time.Duration `json:"last_contact"` // since it last heard from a leader; 0 on the leader
	Term         uint64        `json:"term"`
}

// handleRPC answers a verified member.
func (n *Node) handleRPC(peer peerIdentity, req rpcRequest) rpcResponse {
	switch req.Op {
	case "info":
		info := n.Info()
		return rpcResponse{Info: &info}
	case "apply":
		if n.raft.State() != raft.Leader {
			return n.notLeader()
		}
		res, err := n.local.propose(context.Background(), req.Data)
		if err != nil {
			if notAccepted(err) {
				return n.notLeader()
			}
			return rpcResponse{Error: err.Error()}
		}
		return rpcResponse{Result: toWire(res)}
	case "add", "promote", "remove":
		if n.raft.State() != raft.Leader {
			return n.notLeader()
		}
		var detail string
		var err error
		switch req.Op {
		case "add":
			err = n.addNonvoter(req.ID, req.Address)
		case "promote":
			detail, err = n.promote(req.ID)
		case "remove":
			detail, err = n.removeMember(req.ID, req.Force)
		}
		if err != nil {
			return rpcResponse{Error: err.Error(), ErrKind: toWireErr(err).Kind}
		}
		return rpcResponse{Detail: detail}
	}
	return rpcResponse{Error: fmt.Sprintf("unknown cluster call %q from %s", req.Op, peer.id)}
}

func (n *Node) notLeader() rpcResponse {
	addr, _ := n.raft.LeaderWithID()
	return rpcResponse{NotLeader: true, Leader: string(addr)}
}

// errNoLeader is what a call that needs the leader gets once its hold
// time ran out with none to be found.
var errNoLeader = errors.New("no cluster leader (quorum lost?)")

// toLeader runs req on the leader: here when this member leads, else over
// the cluster port, following redirects and waiting out elections for up
// to hold (or ctx's deadline). Requests are retried only where they were
// certainly not carried out: no leader, not the leader, or a dial failure.
func (n *Node) toLeader(ctx context.Context, req rpcRequest, hold time.Duration) (rpcResponse, error) {
	deadline := time.Now().Add(hold)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	wait := 20 * time.Millisecond
	for {
		var resp rpcResponse
		var retry bool
		if n.raft.State() == raft.Leader {
			resp = n.handleRPC(peerIdentity{id: n.id, role: n.role}, req)
			retry = resp.NotLeader
		} else if addr, _ := n.raft.LeaderWithID(); addr != "" && n.client != nil {
			err := call(string(addr), connRPC, n.client, req, &resp)
			switch {
			case err == nil:
				retry = resp.NotLeader
			case isDialError(err):
				retry = true
			default:
				return rpcResponse{}, fmt.Errorf("leader %s: %w", addr, err)
			}
		} else {
			retry = true
		}
		if !retry {
			if resp.Error != "" {
				return resp, &remoteErr{msg: resp.Error, kind: errKinds[resp.ErrKind]}
			}
			return resp, nil
		}
		if time.Now().Add(wait).After(deadline) {
			return rpcResponse{}, errNoLeader
		}
		select {
		case <-ctx.Done():
			return rpcResponse{}, ctx.Err()
		case <-n.shutdownCh:
			return rpcResponse{}, raft.ErrRaftShutdown
		case <-time.After(wait):
		}
		wait = min(wait*2, 250*time.Millisecond)
	}
}

func isDialError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// notAccepted reports a refusal that certainly left the command out of
// the log, so it may be retried on whoever leads next: unlike
// ErrLeadershipLost, which may come after the entry was committed.
func notAccepted(err error) bool {
	return errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipTransferInProgress)
}

// forwardHold is how long a write waits for a leader to appear, about an
// election and a half: long enough to ride out a failover, short enough
// that a minority member answers "no leader" while a person still waits.
const forwardHold = 5 * time.Second

// forwardingProposer commits through the leader, wherever it is.
type forwardingProposer struct{ n *Node }

func (p forwardingProposer) propose(ctx context.Context, data []byte) (applyResult, error) {
	if p.n.raft.State() == raft.Leader {
		res, err := p.n.local.propose(ctx, data)
		if !notAccepted(err) {
			return res, err
		}
	}
	resp, err := p.n.toLeader(ctx, rpcRequest{Op: "apply", Data: data}, forwardHold)
	if err != nil {
		return applyResult{}, err
	}
	res := resp.Result.result()
	// Read your own writes: a caller that reads the store right after
	// its write must see it, so wait for this member to apply it too.
	if err := p.n.Store.waitApplied(ctx, res.index); err != nil {
		return res, fmt.Errorf("committed as entry %d, not yet applied here: %w", res.index, err)
	}
	return res, nil
}

func (p forwardingProposer) isLeader() bool { return p.n.raft.State() == raft.Leader }
