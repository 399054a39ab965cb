// Package pxe is the pxe plugin: network-boot hints for sites that set a
// next server or boot file.
package pxe

import (
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/branchbox/branchbox/plugins/dhcp/chain"
)

// Plugin registers as "pxe".
var Plugin = chain.Plugin{Name: "pxe", Setup: setup}

func setup(env chain.Env) (chain.Handler, error) {
	next, file := env.Site.NextServer, env.Site.BootFile
	if next == "" && file == "" {
		return nil, nil
	}
	// Old PXE ROMs read siaddr and the file header field, newer clients
	// options 66/67, so set both.
	var siaddr []byte
	if a, err := netip.ParseAddr(next); err == nil && a.Is4() {
		siaddr = a.AsSlice()
	}
	return func(req, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool) {
		if next != "" {
			resp.UpdateOption(dhcpv4.OptTFTPServerName(next))
			if siaddr != nil {
				resp.ServerIPAddr = siaddr
			}
		}
		if file != "" {
			resp.UpdateOption(dhcpv4.OptBootFileName(file))
			resp.BootFileName = file
		}
		return resp, false
	}, nil
}
