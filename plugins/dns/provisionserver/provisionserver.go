// Package provisionserver is a CoreDNS plugin that answers
// ProvisionServer.<site domain> with the addresses of the provisioners
// serving that site, from live state rather than a static list. It is the
// authority for each site zone: SOA at the apex, NXDOMAIN/NODATA with the
// SOA for names it does not know (unless fallthrough passes them on, to
// the leases plugin in branchbox's chain).
package provisionserver

import (
	"context"
	"net"
	"strings"
	"time"

	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"

	"github.com/branchbox/branchbox/plugins/dns/internal/reqmetrics"
	"github.com/branchbox/branchbox/plugins/dns/internal/zone"
)

// ProvisionServer is the plugin handler.
type ProvisionServer struct {
	Next        plugin.Handler
	Table       *Table
	TTL         uint32
	Fallthrough bool
}

// Name implements plugin.Handler.
func (p *ProvisionServer) Name() string { return "provisionserver" }

// ServeDNS implements plugin.Handler.
func (p *ProvisionServer) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	start := time.Now()
	if m := p.reply(r); m != nil {
		rcode, err := zone.Write(w, m)
		reqmetrics.Count(ctx, w, r, m.Rcode, p.Name(), start)
		return rcode, err
	}
	return plugin.NextOrFailure(p.Name(), p.Next, ctx, w, r)
}

// reply is the answer to r, or nil when r is for the next plugin.
func (p *ProvisionServer) reply(r *dns.Msg) *dns.Msg {
	q := &r.Question[0]
	// ToLower returns its argument unchanged, without allocating, when
	// the name is already lower case.
	name := strings.ToLower(q.Name)
	z, off, ok := zone.Find(p.Table.snapshot().zones, name)
	if !ok {
		return nil
	}
	switch name[:off] {
	case zone.ProvisionServerLabel + ".":
		var answer []dns.RR
		if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
			answer = appendA(answer, q.Name, p.TTL, z.v4)
		}
		if q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY {
			answer = appendAAAA(answer, q.Name, p.TTL, z.v6)
		}
		if len(answer) == 0 {
			return zone.NegativeReply(r, dns.RcodeSuccess, z.apex, p.TTL)
		}
		m := zone.Reply(r)
		m.Answer = answer
		return m
	case "":
		if q.Qtype == dns.TypeSOA {
			m := zone.Reply(r)
			m.Answer = []dns.RR{zone.SOA(z.apex, p.TTL)}
			return m
		}
		return zone.NegativeReply(r, dns.RcodeSuccess, z.apex, p.TTL)
	}
	if p.Fallthrough {
		return nil
	}
	return zone.NegativeReply(r, dns.RcodeNameError, z.apex, p.TTL)
}

// The owner name is the question's, letter case included, so resolvers
// that randomise case (DNS 0x20) see their own spelling back.
func appendA(rrs []dns.RR, owner string, ttl uint32, ips []net.IP) []dns.RR {
	for _, ip := range ips {
		rrs = append(rrs, &dns.A{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: ip})
	}
	return rrs
}

func appendAAAA(rrs []dns.RR, owner string, ttl uint32, ips []net.IP) []dns.RR {
	for _, ip := range ips {
		rrs = append(rrs, &dns.AAAA{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: ttl}, AAAA: ip})
	}
	return rrs
}
