// Package metrics is a CoreDNS plugin that counts the queries reaching it
// in CoreDNS's own request metrics (coredns_dns_requests_total,
// coredns_dns_responses_total, coredns_dns_request_duration_seconds) and,
// unlike the stock prometheus plugin, opens no HTTP listener: the
// appliance exports them on its /metrics through Collector.
//
// In branchbox's chain it runs after provisionserver and leases, which
// count their own answers in the same series (internal/reqmetrics), so it
// wraps only the queries that go on to cache and forward. Wrapping every
// query cost a sixth of the server's CPU on ProvisionServer answers: the
// extra frames made each query's goroutine outgrow its first stack.
//
// It records those three series only, not the stock plugin's request and
// response size histograms, which re-pack every message.
package metrics

import (
	"context"
	"time"

	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"

	"github.com/branchbox/branchbox/plugins/dns/internal/reqmetrics"
)

// Metrics is the plugin handler.
type Metrics struct {
	Next plugin.Handler
}

// Name implements plugin.Handler.
func (m *Metrics) Name() string { return "metrics" }

// ServeDNS implements plugin.Handler.
func (m *Metrics) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	status, err := plugin.NextOrFailure(m.Name(), m.Next, ctx, rec, r)
	rc := rec.rcode
	if !plugin.ClientWrite(status) {
		// Nothing was written: the server turns the status into the reply.
		rc = status
	}
	reqmetrics.Count(ctx, w, r, rc, rec.plugin, start)
	return status, err
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

// SetPlugin implements plugin.PluginTracker, through which the chain
// reports the plugin that wrote the reply.
func (r *recorder) SetPlugin(name string) { r.plugin = name }

// GetPlugin implements plugin.PluginTracker.
func (r *recorder) GetPlugin() string { return r.plugin }

var _ plugin.PluginTracker = (*recorder)(nil)
