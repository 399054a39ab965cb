package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type testCluster struct {
	t     *testing.T
	nodes map[string]*Node
}

func (tc *testCluster) open(id, role string, join []string, token string) (*Node, error) {
	n, err := Open(Config{
		ID: id, DataDir: tc.t.TempDir(), RaftBind: freeAddr(tc.t), Role: role,
		Join: join, JoinToken: token, JoinTimeout: 10 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return nil, err
	}
	tc.nodes[id] = n
	tc.t.Cleanup(func() { n.Close() })
	return n, nil
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func kinds(t *testing.T, n *Node) map[string]string {
	ms, err := n.Members()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, m := range ms {
		out[m.ID] = m.Kind
	}
	return out
}

func TestPairAndWitness(t *testing.T) {
	tc := &testCluster{t: t, nodes: map[string]*Node{}}
	a, err := tc.open("a", RoleVoter, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.WaitLeader(context.Background()); err != nil {
		t.Fatal(err)
	}
	token := a.Token()
	if !strings.HasPrefix(token, "bbj1.") {
		t.Fatalf("token %q", token)
	}

	// A token with the right CA hash but the wrong secret is refused
	// before anything is granted.
	parts := strings.Split(token, ".")
	bad := parts[0] + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA." + parts[2]
	if _, err := tc.open("x", RoleVoter, []string{a.port.advertise.String()}, bad); err == nil || !strings.Contains(err.Error(), "join token is not valid") {
		t.Fatalf("bad secret: %v", err)
	}
	// A token naming another CA makes the newcomer refuse the member.
	badCA := parts[0] + "." + parts[1] + "." + strings.Repeat("0", 64)
	if _, err := tc.open("y", RoleVoter, []string{a.port.advertise.String()}, badCA); err == nil || !strings.Contains(err.Error(), "CA is not the one named") {
		t.Fatalf("bad CA hash: %v", err)
	}

	b, err := tc.open("b", RoleVoter, []string{a.port.advertise.String()}, token)
	if err != nil {
		t.Fatal(err)
	}
	// b catches up but stays a non-voter: two voters would stop on either's loss.
	waitUntil(t, "b to catch up", func() bool { return b.raft.AppliedIndex() >= a.raft.CommitIndex() && b.raft.AppliedIndex() > 0 })
	time.Sleep(2500 * time.Millisecond)
	if k := kinds(t, a)["b"]; k != "nonvoter" {
		t.Fatalf("b with no witness: %s, want nonvoter", k)
	}

	w, err := tc.open("w", RoleWitness, []string{b.port.advertise.String()}, token)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "b and w promoted", func() bool {
		k := kinds(t, a)
		return k["b"] == RoleVoter && k["w"] == RoleWitness
	})

	// A write on a follower reaches the leader; business errors keep their kind.
	if err := b.Store.Apply(context.Background(), PutProfile{Profile: Profile{Name: "p1"}, Time: time.Now()}); err != nil {
		t.Fatalf("forwarded write: %v", err)
	}
	waitUntil(t, "profile on the witness", func() bool { _, ok := w.Store.Profile("p1"); return ok })
	err = w.Store.Apply(context.Background(), ConsumeOTP{UUID: "nope", RequestID: "r1", Time: time.Now()})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("forwarded consume of a missing OTP: %v, want ErrNotFound", err)
	}

	// The witness got no secrets: no seal key of the cluster, no CA key.
	if w.pki.caKey != nil || w.pki.joinSecret != nil || string(w.sealKey) == string(a.sealKey) {
		t.Fatal("witness holds cluster secrets")
	}
	if string(b.sealKey) != string(a.sealKey) {
		t.Fatal("full member b has a different seal key")
	}

	// Removing one of three voters would leave two.
	if err := w.Remove(context.Background(), "b", false); !errors.Is(err, ErrTwoVoters) {
		t.Fatalf("remove to two voters: %v", err)
	}

	// A client whose certificate comes from another CA gets nothing.
	other, err := newClusterPKI(t.TempDir(), "evil", RoleVoter)
	if err != nil {
		t.Fatal(err)
	}
	cfg := clientTLS(other)
	cfg.RootCAs = a.pki.pool() // it even trusts the real CA
	var resp rpcResponse
	if err := call(a.port.advertise.String(), connRPC, cfg, rpcRequest{Op: "info"}, &resp); err == nil {
		t.Fatal("a foreign certificate was served")
	}
	// Nor does one with no certificate at all.
	if err := call(a.port.advertise.String(), connRPC, &tls.Config{RootCAs: a.pki.pool(), ServerName: clusterServerName}, rpcRequest{Op: "info"}, &resp); err == nil && resp.Info != nil {
		t.Fatal("a connection without a certificate was served")
	}

	// The leader leaves; b takes over (the witness hands leadership on if it wins).
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "b to lead", func() bool { return b.State() == "leader" })
	if err := w.Store.Apply(context.Background(), PutProfile{Profile: Profile{Name: "p2"}, Time: time.Now()}); err != nil {
		t.Fatalf("write after failover: %v", err)
	}
}

// A lab cluster of five full members: all become voters, and losing the
// leader and then another still leaves a quorum of three.
func TestFiveVoters(t *testing.T) {
	tc := &testCluster{t: t, nodes: map[string]*Node{}}
	first, err := tc.open("n1", RoleVoter, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := first.WaitLeader(context.Background()); err != nil {
		t.Fatal(err)
	}
	nodes := []*Node{first}
	for _, id := range []string{"n2", "n3", "n4", "n5"} {
		n, err := tc.open(id, RoleVoter, []string{first.port.advertise.String()}, first.Token())
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	waitUntil(t, "five voters", func() bool {
		k := kinds(t, first)
		for _, n := range nodes {
			if k[n.id] != RoleVoter {
				return false
			}
		}
		return true
	})
	for range 2 {
		var leader *Node
		for _, n := range nodes {
			if n.State() == "leader" {
				leader = n
			}
		}
		if leader == nil {
			t.Fatal("no leader")
		}
		leader.Close()
		var rest []*Node
		for _, n := range nodes {
			if n != leader {
				rest = append(rest, n)
			}
		}
		nodes = rest
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := nodes[0].Store.Apply(ctx, PutProfile{Profile: Profile{Name: "after-" + leader.id}, Time: time.Now()})
		cancel()
		if err != nil {
			t.Fatalf("write with %d of 5 left: %v", len(nodes), err)
		}
	}
}
