// Package reqmetrics counts queries in CoreDNS's request metrics
// (coredns_dns_requests_total, coredns_dns_responses_total,
// coredns_dns_request_duration_seconds), cheaply: the label children are
// resolved once per label set and cached, and no message is re-packed to
// measure it. The branchbox plugins that answer by themselves count their
// own answers; the metrics plugin counts everything that passes them.
package reqmetrics

import (
	"context"
	"net"
	"sync"
	"time"

	cdmetrics "github.com/coredns/coredns/plugin/metrics"
	"github.com/coredns/coredns/plugin/metrics/vars"
	"github.com/coredns/coredns/plugin/pkg/rcode"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// labels is one label set of the request metrics.
type labels struct {
	server string
	tcp    bool
	ipv6   bool
	qtype  uint16
	rcode  int
	plugin string
}

type series struct {
	requests  prometheus.Counter
	duration  prometheus.Observer
	responses prometheus.Counter
}

var cache sync.Map // labels → *series

// Count records one query r, answered with rc by plugin, that took since
// start. w is the writer the query came in on (for protocol and family).
func Count(ctx context.Context, w dns.ResponseWriter, r *dns.Msg, rc int, plugin string, start time.Time) {
	l := labels{server: cdmetrics.WithServer(ctx), qtype: r.Question[0].Qtype, rcode: rc, plugin: plugin}
	switch a := w.RemoteAddr().(type) {
	case *net.UDPAddr:
		l.ipv6 = a.IP.To4() == nil
	case *net.TCPAddr:
		l.tcp, l.ipv6 = true, a.IP.To4() == nil
	}
	s := seriesFor(l)
	s.requests.Inc()
	s.responses.Inc()
	s.duration.Observe(time.Since(start).Seconds())
}

func seriesFor(l labels) *series {
	if s, ok := cache.Load(l); ok {
		return s.(*series)
	}
	proto, family := "udp", "1"
	if l.tcp {
		proto = "tcp"
	}
	if l.ipv6 {
		family = "2"
	}
	// The zone label is the server block's: branchbox serves one root
	// block. Views are not used.
	const zone, view = ".", ""
	s := &series{
		requests:  vars.RequestCount.WithLabelValues(l.server, zone, view, proto, family, qtypeLabel(l.qtype)),
		duration:  vars.RequestDuration.WithLabelValues(l.server, zone, view),
		responses: vars.ResponseRcode.WithLabelValues(l.server, zone, view, rcode.ToString(l.rcode), l.plugin),
	}
	got, _ := cache.LoadOrStore(l, s)
	return got.(*series)
}

// qtypeLabel names the query types worth a series of their own; the rest
// share "other", so a client sending every type cannot grow the metrics
// without bound.
func qtypeLabel(t uint16) string {
	switch t {
	case dns.TypeA, dns.TypeAAAA, dns.TypePTR, dns.TypeSOA, dns.TypeNS, dns.TypeCNAME, dns.TypeMX, dns.TypeTXT,
		dns.TypeSRV, dns.TypeHTTPS, dns.TypeSVCB, dns.TypeDS, dns.TypeDNSKEY, dns.TypeANY, dns.TypeAXFR, dns.TypeIXFR:
		return dns.TypeToString[t]
	}
	return "other"
}
