// Package serverid is the server_id plugin: it stamps option 54 with the
// appliance's address facing the site and drops requests meant for
// another server.
package serverid

import (
	"fmt"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/branchbox/branchbox/plugins/dhcp/chain"
)

// Plugin registers as "server_id".
var Plugin = chain.Plugin{Name: "server_id", Setup: setup}

func setup(env chain.Env) (chain.Handler, error) {
	id := env.ServerIP.To4()
	if id == nil || id.IsUnspecified() {
		return nil, fmt.Errorf("site %q: no IPv4 server address (got %v)", env.Site.Name, env.ServerIP)
	}
	opt := chain.NewPreset(dhcpv4.OptServerIdentifier(id))
	return func(req, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool) {
		// A client that names another server in REQUEST, RELEASE or DECLINE
		// has chosen that server; answering would fight it — unless it is
		// a member of this cluster, which only answers while it leads: a
		// client whose REQUEST went to a leader that died gets its ACK from
		// the next one rather than after its own timeout.
		if theirs := req.ServerIdentifier(); theirs != nil && !theirs.Equal(id) && (env.Peer == nil || !env.Peer(env.Site.Name, theirs)) {
			return nil, true
		}
		opt.Set(resp)
		return resp, false
	}, nil
}
