package chain

import (
	"encoding/hex"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/branchbox/branchbox/cluster"
)

// DefaultLeaseTime applies when a site sets none.
const DefaultLeaseTime = time.Hour

// LeaseTime is the lease duration a site hands out.
func LeaseTime(s cluster.Site) time.Duration {
	if s.LeaseTime > 0 {
		return s.LeaseTime
	}
	return DefaultLeaseTime
}

// ClientID is the key a lease binds to: the hex of option 61 when the
// client sent one, else its hardware address.
func ClientID(req *dhcpv4.DHCPv4) string {
	if id := req.Options.Get(dhcpv4.OptionClientIdentifier); len(id) > 0 {
		return hex.EncodeToString(id)
	}
	return MAC(req)
}

// MAC is the client hardware address in the usual colon form.
func MAC(req *dhcpv4.DHCPv4) string {
	return strings.ToLower(req.ClientHWAddr.String())
}

// Addr converts a 4-byte net.IP to netip.Addr; anything else is invalid.
func Addr(ip net.IP) netip.Addr {
	ip4 := ip.To4()
	if ip4 == nil {
		return netip.Addr{}
	}
	return netip.AddrFrom4([4]byte(ip4))
}

// IsSet reports whether ip is a real address rather than empty or 0.0.0.0.
func IsSet(ip net.IP) bool {
	a := Addr(ip)
	return a.IsValid() && !a.IsUnspecified()
}

// RequestedAddr is the address a REQUEST asks for: option 50 in the
// SELECTING and INIT-REBOOT states, ciaddr when renewing or rebinding.
func RequestedAddr(req *dhcpv4.DHCPv4) netip.Addr {
	if a := Addr(req.RequestedIPAddress()); a.IsValid() && !a.IsUnspecified() {
		return a
	}
	if a := Addr(req.ClientIPAddr); a.IsValid() && !a.IsUnspecified() {
		return a
	}
	return netip.Addr{}
}

// NAK turns resp into a DHCPNAK carrying only what RFC 2131 table 3 allows:
// the server identifier, the client identifier and a message.
func NAK(resp *dhcpv4.DHCPv4, why string) *dhcpv4.DHCPv4 {
	for code := range resp.Options {
		switch code {
		case dhcpv4.OptionServerIdentifier.Code(), dhcpv4.OptionClientIdentifier.Code(), dhcpv4.OptionRelayAgentInformation.Code():
		default:
			delete(resp.Options, code)
		}
	}
	resp.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeNak))
	resp.UpdateOption(dhcpv4.OptMessage(why))
	resp.YourIPAddr = net.IPv4zero
	resp.ServerIPAddr = net.IPv4zero
	resp.ClientIPAddr = net.IPv4zero
	return resp
}

// IsNAK reports whether resp has been turned into a NAK.
func IsNAK(resp *dhcpv4.DHCPv4) bool {
	return resp.MessageType() == dhcpv4.MessageTypeNak
}

// Preset is a site's fixed options, encoded once when the chain is built:
// they are the same in every reply, and encoding them per packet was a
// good share of a lease's CPU. Replies share the bytes, so nothing may
// change an option's bytes in place (the library replaces them whole).
type Preset struct {
	codes  []uint8
	values [][]byte
}

// NewPreset encodes opts.
func NewPreset(opts ...dhcpv4.Option) Preset {
	var p Preset
	for _, o := range opts {
		b := o.Value.ToBytes()
		p.codes = append(p.codes, o.Code.Code())
		p.values = append(p.values, b[:len(b):len(b)])
	}
	return p
}

// Set puts the preset options into resp, replacing any already there.
func (p Preset) Set(resp *dhcpv4.DHCPv4) {
	for i, c := range p.codes {
		resp.Options[c] = p.values[i]
	}
}
