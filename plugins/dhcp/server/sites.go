package server

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/plugins/dhcp/chain"
	"github.com/branchbox/branchbox/plugins/dhcp/dns"
	"github.com/branchbox/branchbox/plugins/dhcp/hostname"
	"github.com/branchbox/branchbox/plugins/dhcp/leasetime"
	"github.com/branchbox/branchbox/plugins/dhcp/netmask"
	"github.com/branchbox/branchbox/plugins/dhcp/option15"
	"github.com/branchbox/branchbox/plugins/dhcp/pxe"
	rangeplugin "github.com/branchbox/branchbox/plugins/dhcp/range"
	"github.com/branchbox/branchbox/plugins/dhcp/reservations"
	"github.com/branchbox/branchbox/plugins/dhcp/router"
	"github.com/branchbox/branchbox/plugins/dhcp/serverid"
)

// Plugins is every built-in plugin.
var Plugins = []chain.Plugin{
	serverid.Plugin, reservations.Plugin, hostname.Plugin, rangeplugin.Plugin, netmask.Plugin,
	router.Plugin, dns.Plugin, leasetime.Plugin, option15.Plugin, pxe.Plugin,
}

// Order is the chain every site runs. server_id comes first so a NAK made
// later still names the server; reservations and hostname come before
// range, which commits the address and name they chose; the option plugins
// run only for replies range let through.
var Order = []string{
	"server_id", "reservations", "hostname", "range",
	"netmask", "router", "dns", "lease_time", "option15", "pxe",
}

// site is one built scope.
type site struct {
	rec      cluster.Site
	subnet   netip.Prefix
	chain    chain.Chain
	requests prometheus.Counter
}

// siteTable is immutable once built; the server swaps it atomically.
type siteTable struct {
	byIface map[string]*site
	relayed []*site
	all     []*site
}

// forRequest picks the site for a request that arrived on iface ("" for
// the relay listener): by giaddr when relayed, else by the interface,
// else (a unicast renewal from a relayed client) by ciaddr.
func (t *siteTable) forRequest(iface string, req *dhcpv4.DHCPv4) *site {
	if gi := chain.Addr(req.GatewayIPAddr); gi.IsValid() && !gi.IsUnspecified() {
		return t.containing(gi)
	}
	ci := chain.Addr(req.ClientIPAddr)
	if st, ok := t.byIface[iface]; ok {
		if !ci.IsValid() || ci.IsUnspecified() || st.subnet.Contains(ci) {
			return st
		}
	}
	if ci.IsValid() && !ci.IsUnspecified() {
		for _, st := range t.relayed {
			if st.subnet.Contains(ci) {
				return st
			}
		}
	}
	return nil
}

// containing prefers relayed sites, then any site, whose subnet holds a.
func (t *siteTable) containing(a netip.Addr) *site {
	for _, st := range t.relayed {
		if st.subnet.Contains(a) {
			return st
		}
	}
	for _, st := range t.all {
		if st.subnet.Contains(a) {
			return st
		}
	}
	return nil
}

// serverAddr finds the appliance's own address facing a site: on a direct
// site, the interface's address inside the subnet; on a relayed one, the
// source address the kernel would use towards the site's router (the
// usual relay) or, without a router, its first host.
func serverAddr(s cluster.Site, subnet netip.Prefix) (net.IP, error) {
	if !s.Relay {
		ifc, err := net.InterfaceByName(s.Interface)
		if err != nil {
			return nil, fmt.Errorf("interface %q: %w", s.Interface, err)
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			return nil, fmt.Errorf("interface %q: %w", s.Interface, err)
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && subnet.Contains(chain.Addr(ipn.IP)) {
				return ipn.IP.To4(), nil
			}
		}
		return nil, fmt.Errorf("interface %q has no address in %s", s.Interface, subnet)
	}
	target, err := netip.ParseAddr(s.Router)
	if err != nil {
		target = subnet.Masked().Addr().Next()
	}
	// Connecting a UDP socket sends nothing; it only asks the routing
	// table for the source address.
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(target, dhcpv4.ServerPort)))
	if err != nil {
		return nil, fmt.Errorf("no route towards relayed subnet %s: %w", subnet, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.To4(), nil
}
