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
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	snap := l.Table.snapshot()
	now := l.Table.now()

	if q.Qtype == dns.TypePTR {
		if h, ok := snap.ptrs[name]; ok && now.Before(h.expires) {
			m := zone.Reply(r)
			m.Answer = []dns.RR{&dns.PTR{Hdr: l.header(q.Name, dns.TypePTR, h, now), Ptr: h.fqdn}}
			return write(w, m)
		}
	}
	if h, ok := snap.hosts[name]; ok && now.Before(h.expires) {
		return l.answer(w, r, h, now)
	}
	apex, off, ok := findZone(snap, name)
	if !ok || l.Fallthrough && off > 0 {
		return plugin.NextOrFailure(l.Name(), l.Next, ctx, w, r)
	}
	if off == 0 {
		// The apex exists even with no host records.
		return zone.Negative(w, r, dns.RcodeSuccess, apex, l.TTL)
	}
	return zone.Negative(w, r, dns.RcodeNameError, apex, l.TTL)
}

func findZone(s *snapshot, name string) (apex string, off int, ok bool) {
	_, off, ok = zone.Find(s.zones, name)
	return name[off:], off, ok
}

func (l *Leases) answer(w dns.ResponseWriter, r *dns.Msg, h *host, now time.Time) (int, error) {
	q := r.Question[0]
	var rr dns.RR
	switch {
	case h.v4 && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY):
		rr = &dns.A{Hdr: l.header(q.Name, dns.TypeA, h, now), A: h.ip}
	case !h.v4 && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY):
		rr = &dns.AAAA{Hdr: l.header(q.Name, dns.TypeAAAA, h, now), AAAA: h.ip}
	default:
		return zone.Negative(w, r, dns.RcodeSuccess, h.apex, l.TTL)
	}
	m := zone.Reply(r)
	m.Answer = []dns.RR{rr}
	return write(w, m)
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

func write(w dns.ResponseWriter, m *dns.Msg) (int, error) {
	if err := w.WriteMsg(m); err != nil {
		return dns.RcodeServerFailure, err
	}
	return dns.RcodeSuccess, nil
}
