// Package zone holds what the branchbox DNS plugins share about the site
// zones they answer for: name normalisation, longest-suffix zone lookup
// and the synthesised SOA that negative answers carry.
package zone

import (
	"strings"

	"github.com/miekg/dns"
)

// ProvisionServerLabel is the host label AMT firmware looks up in the
// domain DHCP gave it (ProvisionServer.<domain>). No other record may use
// it: a DHCP client naming itself so must not capture provisioning.
const ProvisionServerLabel = "provisionserver"

// Canonical returns a domain in the form every lookup table uses: lower
// case, fully qualified.
func Canonical(domain string) string {
	return dns.Fqdn(strings.ToLower(domain))
}

// Find returns the most specific zone in zones that contains name (which
// must be canonical), and the offset in name where that zone starts.
func Find[T any](zones map[string]T, name string) (v T, off int, ok bool) {
	for {
		if v, ok := zones[name[off:]]; ok {
			return v, off, true
		}
		next, end := dns.NextLabel(name, off)
		if end {
			return v, 0, false
		}
		off = next
	}
}

// Serial is the SOA serial of every site zone. Nothing transfers these
// zones, so the serial carries no meaning; a constant keeps the SOA the
// same whichever plugin writes it.
const Serial = 1

// SOA is the start of authority for a site zone. Its TTL and minimum are
// ttl, so resolvers cache a negative answer no longer than a positive one:
// a name that appears (a new lease, a new site address) is seen soon.
func SOA(apex string, ttl uint32) *dns.SOA {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: apex, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns:      "provisionserver." + apex,
		Mbox:    "hostmaster." + apex,
		Serial:  Serial,
		Refresh: 7200,
		Retry:   1800,
		Expire:  86400,
		Minttl:  ttl,
	}
}

// Reply starts an authoritative answer to r.
func Reply(r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	return m
}

// NegativeReply is NXDOMAIN (rcode dns.RcodeNameError) or NODATA
// (dns.RcodeSuccess with no answer) for r, with the zone's SOA in the
// authority section as RFC 2308 asks.
func NegativeReply(r *dns.Msg, rcode int, apex string, ttl uint32) *dns.Msg {
	m := Reply(r)
	m.Rcode = rcode
	m.Ns = []dns.RR{SOA(apex, ttl)}
	return m
}

// Write sends m and returns what a CoreDNS plugin returns for it.
func Write(w dns.ResponseWriter, m *dns.Msg) (int, error) {
	if err := w.WriteMsg(m); err != nil {
		return dns.RcodeServerFailure, err
	}
	return m.Rcode, nil
}
