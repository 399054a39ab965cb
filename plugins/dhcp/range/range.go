// Package rangeplugin is the range plugin: it allocates from the site's
// dynamic range, decides which REQUESTs get their address (the server then
// commits that lease through the replicated store before the ACK leaves),
// handles RELEASE and DECLINE, and enforces reservations chosen by the
// plugin before it.
package rangeplugin

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/branchbox/branchbox/plugins/dhcp/chain"
	"github.com/branchbox/branchbox/plugins/dhcp/leases"
)

// Plugin registers as "range".
var Plugin = chain.Plugin{Name: "range", Setup: setup}

type handler struct {
	site   string
	subnet netip.Prefix
	pool   *leases.Pool
	log    *slog.Logger
}

func setup(env chain.Env) (chain.Handler, error) {
	if env.Leases == nil {
		return nil, fmt.Errorf("site %q: no lease book", env.Site.Name)
	}
	first, last, err := bounds(env)
	if err != nil {
		return nil, fmt.Errorf("site %q: %w", env.Site.Name, err)
	}
	pool, err := env.Leases.Pool(env.Site.Name, first, last, excluded(env))
	if err != nil {
		return nil, fmt.Errorf("site %q: %w", env.Site.Name, err)
	}
	log := env.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &handler{site: env.Site.Name, subnet: env.Subnet, pool: pool, log: log}
	return h.handle, nil
}

func bounds(env chain.Env) (first, last netip.Addr, err error) {
	s := env.Site
	if s.RangeStart == "" && s.RangeEnd == "" {
		return first, last, nil // reservations only
	}
	if first, err = netip.ParseAddr(s.RangeStart); err != nil {
		return first, last, fmt.Errorf("range start: %w", err)
	}
	if last, err = netip.ParseAddr(s.RangeEnd); err != nil {
		return first, last, fmt.Errorf("range end: %w", err)
	}
	if !env.Subnet.Contains(first) || !env.Subnet.Contains(last) {
		return first, last, fmt.Errorf("range %s-%s is not inside subnet %s", first, last, env.Subnet)
	}
	return first, last, nil
}

// excluded lists addresses the pool must never hand out dynamically: the
// subnet's network and broadcast addresses, the router, the appliance
// itself and every reservation.
func excluded(env chain.Env) []netip.Addr {
	var out []netip.Addr
	if p := env.Subnet; p.IsValid() && p.Bits() < 31 {
		out = append(out, p.Masked().Addr(), broadcast(p))
	}
	if a, err := netip.ParseAddr(env.Site.Router); err == nil {
		out = append(out, a)
	}
	if a := chain.Addr(env.ServerIP); a.IsValid() {
		out = append(out, a)
	}
	for _, r := range env.Site.Reservations {
		if a, err := netip.ParseAddr(r.IP); err == nil {
			out = append(out, a)
		}
	}
	return out
}

func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func (h *handler) handle(req, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool) {
	client := chain.ClientID(req)
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		return h.discover(req, resp, client)
	case dhcpv4.MessageTypeRequest:
		return h.request(req, resp, client)
	case dhcpv4.MessageTypeRelease:
		if ip := chain.Addr(req.ClientIPAddr); ip.IsValid() && !ip.IsUnspecified() {
			if err := h.pool.Release(client, ip); err != nil {
				h.log.Warn("release failed", "site", h.site, "ip", ip, "err", err)
			}
		}
		return nil, true
	case dhcpv4.MessageTypeDecline:
		if ip := chain.Addr(req.RequestedIPAddress()); ip.IsValid() {
			if err := h.pool.Decline(client, chain.MAC(req), ip); err != nil {
				h.log.Info("decline ignored", "site", h.site, "ip", ip, "err", err)
			} else {
				h.log.Warn("address declined by client, quarantined", "site", h.site, "ip", ip, "client", client)
			}
		}
		return nil, true
	default: // INFORM: configuration only, no address
		return resp, false
	}
}

func (h *handler) discover(req, resp *dhcpv4.DHCPv4, client string) (*dhcpv4.DHCPv4, bool) {
	if chain.IsSet(resp.YourIPAddr) {
		return resp, false // reserved
	}
	ip, err := h.pool.Offer(client, chain.Addr(req.RequestedIPAddress()))
	if err != nil {
		h.log.Warn("no address to offer", "site", h.site, "err", err)
		return nil, true
	}
	resp.YourIPAddr = net.IP(ip.AsSlice())
	return resp, false
}

func (h *handler) request(req, resp *dhcpv4.DHCPv4, client string) (*dhcpv4.DHCPv4, bool) {
	ip := chain.RequestedAddr(req)
	if !ip.IsValid() {
		return nil, true // no address named: nothing to answer
	}
	fixed := chain.Addr(resp.YourIPAddr)
	switch {
	case !h.subnet.Contains(ip):
		return chain.NAK(resp, "address not on this network"), true
	case chain.IsSet(resp.YourIPAddr) && ip != fixed:
		return chain.NAK(resp, "address reserved elsewhere for this client"), true
	case !chain.IsSet(resp.YourIPAddr) && (!h.pool.Contains(ip) || h.pool.Excluded(ip)):
		return chain.NAK(resp, "address not available"), true
	}
	resp.YourIPAddr = net.IP(ip.AsSlice())
	return resp, false
}
