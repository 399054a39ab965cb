// Package netmask is the netmask plugin: option 1 from the site's subnet.
package netmask

import (
	"fmt"
	"net"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/branchbox/branchbox/plugins/dhcp/chain"
)

// Plugin registers as "netmask".
var Plugin = chain.Plugin{Name: "netmask", Setup: setup}

func setup(env chain.Env) (chain.Handler, error) {
	if !env.Subnet.IsValid() || !env.Subnet.Addr().Is4() {
		return nil, fmt.Errorf("site %q: no IPv4 subnet", env.Site.Name)
	}
	opt := chain.NewPreset(dhcpv4.OptSubnetMask(net.CIDRMask(env.Subnet.Bits(), 32)))
	return func(req, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool) {
		opt.Set(resp)
		return resp, false
	}, nil
}
