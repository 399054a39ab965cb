// Package leasetime is the lease_time plugin: option 51, with the renewal
// (58) and rebinding (59) times at the RFC 2131 defaults of 1/2 and 7/8.
package leasetime

import (
	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/branchbox/branchbox/plugins/dhcp/chain"
)

// Plugin registers as "lease_time".
var Plugin = chain.Plugin{Name: "lease_time", Setup: setup}

func setup(env chain.Env) (chain.Handler, error) {
	d := chain.LeaseTime(env.Site)
	opts := chain.NewPreset(dhcpv4.OptIPAddressLeaseTime(d), dhcpv4.OptRenewTimeValue(d/2),
		dhcpv4.OptRebindingTimeValue(d*7/8))
	return func(req, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool) {
		// RFC 2131 table 3: an ACK to INFORM must not carry a lease time.
		if req.MessageType() == dhcpv4.MessageTypeInform {
			return resp, false
		}
		opts.Set(resp)
		return resp, false
	}, nil
}
