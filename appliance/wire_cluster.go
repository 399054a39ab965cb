package appliance

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/branchbox/branchbox/appliance/config"
	"github.com/branchbox/branchbox/cluster"
)

// ClusterConfig maps the config's node section onto the store's.
func ClusterConfig(cfg *config.Config) (cluster.Config, error) {
	cc := cluster.Config{ID: cfg.Node.ID, DataDir: cfg.Node.DataDir, Role: cluster.RoleVoter}
	cl := cfg.Node.Cluster
	if cl == nil {
		return cc, nil
	}
	cc.RaftBind, cc.Join, cc.Role, cc.JoinToken, cc.Heartbeat = cl.Raft, cl.Join, cl.Role, cl.JoinToken, cl.Heartbeat.Std()
	if cl.JoinTokenFile != "" {
		b, err := os.ReadFile(cfg.Path(cl.JoinTokenFile))
		if err != nil {
			return cc, fmt.Errorf("node.cluster.join_token_file: %w", err)
		}
		cc.JoinToken = strings.TrimSpace(string(b))
	}
	return cc, nil
}

func (a *App) clustered() bool { return a.Cfg.Node.Cluster != nil }

func (a *App) witness() bool {
	return a.clustered() && a.Cfg.Node.Cluster.Role == cluster.RoleWitness
}

// memberRecord is what this member tells the others: its role and where
// each site's devices reach its provisioner.
func (a *App) memberRecord() cluster.MemberRecord {
	m := cluster.MemberRecord{ID: a.Cfg.Node.ID, Role: a.Node.Role(), API: a.Cfg.Node.API}
	if a.witness() {
		return m
	}
	for _, s := range a.Store.Sites() {
		var addrs []string
		for _, ad := range a.ownProvisionServerAddrs(s) {
			addrs = append(addrs, ad.String())
		}
		if len(addrs) > 0 {
			if m.SiteAddrs == nil {
				m.SiteAddrs = map[string][]string{}
			}
			m.SiteAddrs[s.Name] = addrs
		}
	}
	return m
}

// publishMember keeps this member's record current: at start, whenever
// sites change, and now and then for addresses that change under it.
func (a *App) publishMember(ctx context.Context) {
	changed, stop := a.Store.WatchConfig()
	defer stop()
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		want := a.memberRecord()
		cur, ok := a.Store.MemberRecord(want.ID)
		cur.Updated = time.Time{}
		if !ok || !reflect.DeepEqual(cur, want) {
			want.Updated = time.Now().UTC()
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := a.Store.Apply(actx, cluster.PutMember{Member: want}); err != nil && ctx.Err() == nil {
				a.Log.Warn("publishing this member's services", "err", err)
			}
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
	}
}

// clusterProvisionServerAddrs answers ProvisionServer.<domain> with every
// live member serving the site, the leader first: devices try the first
// address, and the leader's own writes need no forwarding.
func (a *App) clusterProvisionServerAddrs(s cluster.Site) []netip.Addr {
	leader := a.Node.Leader()
	recs := a.Store.MemberRecords()
	var out []netip.Addr
	add := func(m cluster.MemberRecord) {
		if m.Role == cluster.RoleWitness || !a.Node.Live(m.ID) {
			return
		}
		for _, s := range m.SiteAddrs[s.Name] {
			if ad, err := netip.ParseAddr(s); err == nil {
				out = append(out, ad)
			}
		}
	}
	for _, m := range recs {
		if m.ID == leader {
			add(m)
		}
	}
	for _, m := range recs {
		if m.ID != leader {
			add(m)
		}
	}
	if len(out) == 0 {
		// Before the records arrive (a fresh member), answer for itself.
		return a.ownProvisionServerAddrs(s)
	}
	return out
}

// dhcpPeer recognises the other members' addresses on a site, so the
// leader answers REQUESTs a client addressed to a member that has failed
// (nil on a single box).
func (a *App) dhcpPeer() func(site string, addr net.IP) bool {
	if !a.clustered() {
		return nil
	}
	return func(site string, addr net.IP) bool {
		for _, m := range a.Store.MemberRecords() {
			if m.ID == a.Cfg.Node.ID {
				continue
			}
			for _, s := range m.SiteAddrs[site] {
				if ip := net.ParseIP(s); ip != nil && ip.Equal(addr) {
					return true
				}
			}
		}
		return false
	}
}
