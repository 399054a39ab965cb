// Package dns is the dns plugin: option 6. By default it names the
// appliance itself, since the appliance answers ProvisionServer.<domain>;
// a site's dns_servers override that.
package dns

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/branchbox/branchbox/plugins/dhcp/chain"
)

// Plugin registers as "dns".
var Plugin = chain.Plugin{Name: "dns", Setup: setup}

func setup(env chain.Env) (chain.Handler, error) {
	var servers []net.IP
	for _, s := range env.Site.DNSServers {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("site %q: dns server %q is not an IPv4 address", env.Site.Name, s)
		}
		servers = append(servers, net.IP(a.AsSlice()))
	}
	if len(servers) == 0 {
		self := env.ServerIP.To4()
		if self == nil || self.IsUnspecified() {
			return nil, fmt.Errorf("site %q: no dns_servers and no appliance address to offer", env.Site.Name)
		}
		servers = []net.IP{self}
	}
	opt := chain.NewPreset(dhcpv4.OptDNS(servers...))
	return func(req, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool) {
		opt.Set(resp)
		return resp, false
	}, nil
}
