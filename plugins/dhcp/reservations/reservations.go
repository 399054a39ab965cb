// Package reservations is the reservations plugin: a fixed address (and
// optionally a host name) for a client known by MAC or by client
// identifier (option 61). It only chooses the address; the range plugin
// commits it like any other lease, so reserved clients show up in the
// lease table and in DNS.
package reservations

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/plugins/dhcp/chain"
)

// Plugin registers as "reservations".
var Plugin = chain.Plugin{Name: "reservations", Setup: setup}

type table struct {
	byMAC      map[string]cluster.Reservation
	byClientID map[string]cluster.Reservation
}

func setup(env chain.Env) (chain.Handler, error) {
	if len(env.Site.Reservations) == 0 {
		return nil, nil
	}
	t := table{byMAC: map[string]cluster.Reservation{}, byClientID: map[string]cluster.Reservation{}}
	seenIP := map[netip.Addr]bool{}
	for i, r := range env.Site.Reservations {
		ip, err := netip.ParseAddr(r.IP)
		if err != nil || !ip.Is4() {
			return nil, fmt.Errorf("site %q reservation %d: ip %q is not an IPv4 address", env.Site.Name, i, r.IP)
		}
		if env.Subnet.IsValid() && !env.Subnet.Contains(ip) {
			return nil, fmt.Errorf("site %q reservation %d: %s is outside subnet %s", env.Site.Name, i, ip, env.Subnet)
		}
		if seenIP[ip] {
			return nil, fmt.Errorf("site %q reservation %d: %s is reserved twice", env.Site.Name, i, ip)
		}
		seenIP[ip] = true
		switch {
		case r.ClientID != "":
			id, err := normalizeClientID(r.ClientID)
			if err != nil {
				return nil, fmt.Errorf("site %q reservation %d: client_id: %w", env.Site.Name, i, err)
			}
			t.byClientID[id] = r
		case r.MAC != "":
			mac, err := net.ParseMAC(r.MAC)
			if err != nil {
				return nil, fmt.Errorf("site %q reservation %d: mac: %w", env.Site.Name, i, err)
			}
			t.byMAC[strings.ToLower(mac.String())] = r
		default:
			return nil, fmt.Errorf("site %q reservation %d: needs a mac or a client_id", env.Site.Name, i)
		}
	}
	return t.handle, nil
}

func (t table) handle(req, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool) {
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest:
	default:
		return resp, false
	}
	r, ok := t.lookup(req)
	if !ok {
		return resp, false
	}
	resp.YourIPAddr = net.ParseIP(r.IP).To4()
	if r.Hostname != "" {
		resp.UpdateOption(dhcpv4.OptHostName(r.Hostname))
	}
	return resp, false
}

// lookup prefers the client identifier: it is what the client asks to be
// known by, and it survives a NIC swap.
func (t table) lookup(req *dhcpv4.DHCPv4) (cluster.Reservation, bool) {
	if id := req.Options.Get(dhcpv4.OptionClientIdentifier); len(id) > 0 {
		if r, ok := t.byClientID[hex.EncodeToString(id)]; ok {
			return r, true
		}
	}
	r, ok := t.byMAC[chain.MAC(req)]
	return r, ok
}

func normalizeClientID(s string) (string, error) {
	s = strings.ToLower(strings.NewReplacer(":", "", "-", "").Replace(s))
	if _, err := hex.DecodeString(s); err != nil || s == "" {
		return "", fmt.Errorf("%q is not hex", s)
	}
	return s, nil
}
