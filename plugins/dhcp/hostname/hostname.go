// Package hostname is the hostname plugin: it takes the client's name from
// option 12 (or option 81, client FQDN) and puts it on the reply, where the
// range plugin records it on the lease so DNS can publish it.
package hostname

import (
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/rfc1035label"

	"github.com/branchbox/branchbox/plugins/dhcp/chain"
)

// Plugin registers as "hostname".
var Plugin = chain.Plugin{Name: "hostname", Setup: setup}

// RFC 4702 flag bits of option 81.
const (
	flagS = 1 << 0 // client asks the server to update the A record
	flagO = 1 << 1 // server overrode the client's S choice
	flagE = 1 << 2 // name is in DNS wire format
	flagN = 1 << 3 // no server updates
)

func setup(env chain.Env) (chain.Handler, error) {
	domain := strings.TrimSuffix(env.Site.Domain, ".")
	return func(req, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool) {
		switch req.MessageType() {
		case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest:
		default:
			return resp, false
		}
		name := Sanitize(resp.HostName()) // a reservation's name wins
		if name == "" {
			name = Sanitize(req.HostName())
		}
		fqdn := req.Options.Get(dhcpv4.OptionFQDN)
		if name == "" {
			name = Sanitize(fqdnName(fqdn))
		}
		if name == "" {
			resp.DeleteOption(dhcpv4.OptionHostName)
			return resp, false
		}
		resp.UpdateOption(dhcpv4.OptHostName(name))
		if len(fqdn) >= 3 {
			resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionFQDN, fqdnReply(fqdn[0], name, domain)))
		}
		return resp, false
	}, nil
}

// Sanitize reduces a client-supplied name to one lowercase DNS label, or ""
// when nothing usable is left.
func Sanitize(s string) string {
	s, _, _ = strings.Cut(strings.ToLower(strings.TrimSpace(s)), ".")
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			b.WriteRune(r)
		case r == '_' || r == ' ':
			b.WriteByte('-')
		}
	}
	out := strings.Trim(b.String(), "-")
	if len(out) > 63 {
		out = strings.TrimRight(out[:63], "-")
	}
	return out
}

// fqdnName extracts the name from option 81: flags, two RCODE bytes, then
// the name, in wire format when the E bit is set.
func fqdnName(opt []byte) string {
	if len(opt) < 4 {
		return ""
	}
	if opt[0]&flagE == 0 {
		return string(opt[3:])
	}
	labels, err := rfc1035label.FromBytes(opt[3:])
	if err != nil || len(labels.Labels) == 0 {
		return ""
	}
	return labels.Labels[0]
}

// fqdnReply answers option 81 per RFC 4702: the server (not the client)
// publishes the name, so S is cleared, O tells a client that asked
// otherwise, N is off, and the RCODE bytes are 255.
func fqdnReply(clientFlags byte, name, domain string) []byte {
	flags := clientFlags & flagE
	if clientFlags&flagS != 0 {
		flags |= flagO
	}
	full := name
	if domain != "" {
		full = name + "." + domain
	}
	var enc []byte
	if flags&flagE != 0 {
		enc = (&rfc1035label.Labels{Labels: []string{full}}).ToBytes()
	} else {
		enc = []byte(full)
	}
	return append([]byte{flags, 255, 255}, enc...)
}
