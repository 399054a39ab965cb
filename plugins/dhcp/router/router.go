// Package router is the router plugin: option 3 from the site's router.
package router

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/branchbox/branchbox/plugins/dhcp/chain"
)

// Plugin registers as "router".
var Plugin = chain.Plugin{Name: "router", Setup: setup}

func setup(env chain.Env) (chain.Handler, error) {
	if env.Site.Router == "" {
		return nil, nil
	}
	a, err := netip.ParseAddr(env.Site.Router)
	if err != nil || !a.Is4() {
		return nil, fmt.Errorf("site %q: router %q is not an IPv4 address", env.Site.Name, env.Site.Router)
	}
	if env.Subnet.IsValid() && !env.Subnet.Contains(a) {
		return nil, fmt.Errorf("site %q: router %s is outside subnet %s", env.Site.Name, a, env.Subnet)
	}
	opt := chain.NewPreset(dhcpv4.OptRouter(net.IP(a.AsSlice())))
	return func(req, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool) {
		opt.Set(resp)
		return resp, false
	}, nil
}
