// Package leases is a CoreDNS plugin that publishes A/AAAA and PTR records
// for hosts holding a DHCP lease with a hostname, as
// <hostname>.<site domain>, straight from the store's leases: a record
// appears when the lease is committed and disappears when it expires or is
// released. For names in a site zone it does not know it answers NXDOMAIN
// with the zone's SOA (or, with fallthrough, passes them on); reverse
// names it does not know always go to the next plugin.
package leases

import (
	"context"
	"strings"
	"time"

	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"

	"github.com/branchbox/branchbox/plugins/dns/internal/reqmetrics"
	"github.com/branchbox/branchbox/plugins/dns/internal/zone"
)

// Leases is the plugin handler.
type Leases struct {
	Next        plugin.Handler
	Table       *Table
	TTL         uint32
	Fallthrough bool
}

// Name implements plugin.Handler.
func (l *Leases) Name() string { return "leases" }

// ServeDNS implements plugin.Handler.
func (l *Leases) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	start := time.Now()
	if m := l.reply(r); m != nil {
		rcode, err := zone.Write(w, m)
		reqmetrics.Count(ctx, w, r, m.Rcode, l.Name(), start)
		return rcode, err
	}
	return plugin.NextOrFailure(l.Name(), l.Next, ctx, w, r)
}

// reply is the answer to r, or nil when r is for the next plugin.
func (l *Leases) reply(r *dns.Msg) *dns.Msg {
	q := &r.Question[0]
	name := strings.ToLower(q.Name)
	snap := l.Table.snapshot()
	now := l.Table.now()

	if q.Qtype == dns.TypePTR {
		if h, ok := snap.ptrs[name]; ok && now.Before(h.expires) {
			m := zone.Reply(r)
			m.Answer = []dns.RR{&dns.PTR{Hdr: l.header(q.Name, dns.TypePTR, h, now), Ptr: h.fqdn}}
			return m
		}
	}
	if h, ok := snap.hosts[name]; ok && now.Before(h.expires) {
		return l.answer(r, h, now)
	}
	_, off, ok := zone.Find(snap.zones, name)
	switch {
	case !ok:
		return nil
	case off == 0:
		// The apex exists even with no host records.
		return zone.NegativeReply(r, dns.RcodeSuccess, name, l.TTL)
	case l.Fallthrough:
		return nil
	}
	return zone.NegativeReply(r, dns.RcodeNameError, name[off:], l.TTL)
}

func (l *Leases) answer(r *dns.Msg, h *host, now time.Time) *dns.Msg {
	q := &r.Question[0]
	var rr dns.RR
	switch {
	case h.v4 && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY):
		rr = &dns.A{Hdr: l.header(q.Name, dns.TypeA, h, now), A: h.ip}
	case !h.v4 && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY):
		rr = &dns.AAAA{Hdr: l.header(q.Name, dns.TypeAAAA, h, now), AAAA: h.ip}
	default:
		return zone.NegativeReply(r, dns.RcodeSuccess, h.apex, l.TTL)
	}
	m := zone.Reply(r)
	m.Answer = []dns.RR{rr}
	return m
}

// header gives a record the configured TTL, cut to the lease's remaining
// time so no cache keeps a host past its lease.
func (l *Leases) header(owner string, rrtype uint16, h *host, now time.Time) dns.RR_Header {
	ttl := l.TTL
	if left := h.expires.Sub(now); left < time.Duration(ttl)*time.Second {
		ttl = uint32(left / time.Second)
	}
	return dns.RR_Header{Name: owner, Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttl}
}
