// Package metrics is a CoreDNS plugin that counts every query in
// CoreDNS's own request metrics (coredns_dns_requests_total,
// coredns_dns_responses_total, coredns_dns_request_duration_seconds) and,
// unlike the stock prometheus plugin, opens no HTTP listener: the
// appliance exports them on its /metrics through Collector.
//
// It records those three series only, not the stock plugin's request and
// response size histograms: measuring sizes re-packs every message, and
// together with resolving six label sets per query that made the stock
// reporting a quarter of the server's CPU on ProvisionServer answers. The
// label children are resolved once per label set and cached.
package metrics

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/coredns/coredns/plugin"
	cdmetrics "github.com/coredns/coredns/plugin/metrics"
	"github.com/coredns/coredns/plugin/metrics/vars"
	"github.com/coredns/coredns/plugin/pkg/rcode"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics is the plugin handler.
type Metrics struct {
	Next plugin.Handler

	series sync.Map // labels → *series
}

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

// Name implements plugin.Handler.
func (m *Metrics) Name() string { return "metrics" }

// ServeDNS implements plugin.Handler.
func (m *Metrics) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	growStack() // see stack.go
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	status, err := plugin.NextOrFailure(m.Name(), m.Next, ctx, rec, r)
	rc := rec.rcode
	if !plugin.ClientWrite(status) {
		// Nothing was written: the server turns the status into the reply.
		rc = status
	}
	l := labels{server: cdmetrics.WithServer(ctx), qtype: r.Question[0].Qtype, rcode: rc, plugin: rec.plugin}
	switch a := w.RemoteAddr().(type) {
	case *net.UDPAddr:
		l.ipv6 = a.IP.To4() == nil
	case *net.TCPAddr:
		l.tcp, l.ipv6 = true, a.IP.To4() == nil
	}
	s := m.seriesFor(l)
	s.requests.Inc()
	s.responses.Inc()
	s.duration.Observe(time.Since(start).Seconds())
	return status, err
}

func (m *Metrics) seriesFor(l labels) *series {
	if s, ok := m.series.Load(l); ok {
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
	got, _ := m.series.LoadOrStore(l, s)
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

// recorder notes the rcode of the reply and which plugin wrote it.
type recorder struct {
	dns.ResponseWriter
	rcode  int
	plugin string
}

func (r *recorder) WriteMsg(m *dns.Msg) error {
	r.rcode = m.Rcode
	return r.ResponseWriter.WriteMsg(m)
}

func (r *recorder) Write(b []byte) (int, error) {
	// A raw reply: its rcode is the low four bits of header byte 3.
	if len(b) > 3 {
		r.rcode = int(b[3] & 0xf)
	}
	return r.ResponseWriter.Write(b)
}

// SetPlugin and GetPlugin implement plugin.PluginTracker, through which
// the chain reports the plugin that wrote the reply.
func (r *recorder) SetPlugin(name string) { r.plugin = name }

// GetPlugin implements plugin.PluginTracker.
func (r *recorder) GetPlugin() string { return r.plugin }

var _ plugin.PluginTracker = (*recorder)(nil)
