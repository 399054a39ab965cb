// Package metrics is a CoreDNS plugin that records the standard
// coredns_dns_* request metrics exactly as the stock prometheus plugin
// does, but opens no HTTP listener of its own: the appliance exports them
// on its /metrics through Collector. CoreDNS's plugins register their
// metrics (these, cache's, forward's) in prometheus.DefaultRegisterer.
package metrics

import (
	"context"

	"github.com/coredns/coredns/plugin"
	cdmetrics "github.com/coredns/coredns/plugin/metrics"
	"github.com/coredns/coredns/plugin/metrics/vars"
	"github.com/coredns/coredns/plugin/pkg/rcode"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
)

// Metrics is the plugin handler.
type Metrics struct {
	Next plugin.Handler
}

// Name implements plugin.Handler.
func (m *Metrics) Name() string { return "metrics" }

// ServeDNS implements plugin.Handler.
func (m *Metrics) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	growStack() // see stack.go
	state := request.Request{W: w, Req: r}
	reqSize := r.Len() // before any later plugin rewrites the request
	rw := cdmetrics.NewRecorder(w)
	status, err := plugin.NextOrFailure(m.Name(), m.Next, ctx, rw, r)
	rc := rw.Rcode
	if !plugin.ClientWrite(status) {
		// Nothing was written: the server turns the status into the reply.
		rc = status
	}
	// The zone label is the server block's, and branchbox serves one
	// root block.
	vars.Report(cdmetrics.WithServer(ctx), state, ".", cdmetrics.WithView(ctx), rcode.ToString(rc), rw.Plugin,
		rw.Len, rw.Start, vars.WithOriginalReqSize(reqSize))
	return status, err
}
