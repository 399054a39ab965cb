package appliance

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/branchbox/branchbox/cluster"
)

// raftCollector reads raft's own counters at scrape time.
type raftCollector struct {
	n       *cluster.Node
	applied *prometheus.Desc
	commit  *prometheus.Desc
	leader  *prometheus.Desc
	peers   *prometheus.Desc
	state   *prometheus.Desc
}

func newRaftCollector(n *cluster.Node) *raftCollector {
	return &raftCollector{
		n:       n,
		applied: prometheus.NewDesc("branchbox_raft_applied_index", "Index of the last raft entry applied to the state.", nil, nil),
		commit:  prometheus.NewDesc("branchbox_raft_commit_index", "Index of the last committed raft entry.", nil, nil),
		leader:  prometheus.NewDesc("branchbox_raft_leader", "1 when this node is the raft leader.", nil, nil),
		peers:   prometheus.NewDesc("branchbox_raft_members", "Servers in the raft configuration.", nil, nil),
		state:   prometheus.NewDesc("branchbox_raft_state", "1 for this node's raft state (leader, follower, candidate, shutdown).", []string{"state"}, nil),
	}
}

func (c *raftCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.applied
	ch <- c.commit
	ch <- c.leader
	ch <- c.peers
	ch <- c.state
}

func (c *raftCollector) Collect(ch chan<- prometheus.Metric) {
	stats := c.n.Stats()
	num := func(k string) float64 {
		v, _ := strconv.ParseFloat(stats[k], 64)
		return v
	}
	leader := 0.0
	if c.n.State() == "leader" {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(c.applied, prometheus.GaugeValue, num("applied_index"))
	ch <- prometheus.MustNewConstMetric(c.commit, prometheus.GaugeValue, num("commit_index"))
	ch <- prometheus.MustNewConstMetric(c.leader, prometheus.GaugeValue, leader)
	ch <- prometheus.MustNewConstMetric(c.peers, prometheus.GaugeValue, num("num_peers")+1)
	ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, 1, c.n.State())
}
