package metrics

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/plugin/metrics/vars"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
)

func TestServeDNSReports(t *testing.T) {
	tests := []struct {
		name      string
		next      test.Handler
		wantRcode string
	}{
		{name: "answered", next: test.NextHandler(dns.RcodeSuccess, nil), wantRcode: "NOERROR"},
		{name: "not written", next: test.NextHandler(dns.RcodeServerFailure, errors.New("upstream down")), wantRcode: "SERVFAIL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			requests := vars.RequestCount.WithLabelValues("", ".", "", "udp", "1", "A")
			rcodes := vars.ResponseRcode.WithLabelValues("", ".", "", tc.wantRcode, "")
			before, beforeRcode := counterValue(t, requests), counterValue(t, rcodes)
			m := &Metrics{Next: tc.next}
			r := new(dns.Msg)
			r.SetQuestion("example.org.", dns.TypeA)
			if _, err := m.ServeDNS(context.Background(), dnstest.NewRecorder(&test.ResponseWriter{}), r); err != nil && tc.wantRcode == "NOERROR" {
				t.Fatal(err)
			}
			if got := counterValue(t, requests) - before; got != 1 {
				t.Errorf("requests counted %v, want 1", got)
			}
			if got := counterValue(t, rcodes) - beforeRcode; got != 1 {
				t.Errorf("%s responses counted %v, want 1", tc.wantRcode, got)
			}
		})
	}
}

func TestSetup(t *testing.T) {
	for input, wantErr := range map[string]bool{
		"metrics":          false,
		"metrics :9153":    true,
		"metrics {\n}":     true,
		"metrics {\n a\n}": true,
		"metrics\nmetrics": true,
	} {
		err := setup(caddy.NewTestController("dns", input))
		if (err != nil) != wantErr {
			t.Errorf("setup(%q) = %v, want error %v", input, err, wantErr)
		}
	}
}

// Collector puts the coredns_ families of one registry into another that
// already has its own Go and process collectors, without clashing.
func TestCollector(t *testing.T) {
	source := prometheus.NewRegistry()
	source.MustRegister(collectors.NewGoCollector())
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coredns_test_total", Help: "test"}, []string{"server"})
	source.MustRegister(c)
	c.WithLabelValues("dns://:53").Add(3)
	c.WithLabelValues("dns://:5353").Add(1)
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "coredns_test_seconds", Help: "test"})
	source.MustRegister(h)
	h.Observe(0.2)

	app := prometheus.NewRegistry()
	app.MustRegister(collectors.NewGoCollector(), Collector(source))
	families, err := app.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := f.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				got[key] = fmt.Sprint(m.GetCounter().GetValue())
			case dto.MetricType_HISTOGRAM:
				got[key] = fmt.Sprint(m.GetHistogram().GetSampleCount())
			default:
				got[key] = f.GetType().String()
			}
		}
	}
	for key, want := range map[string]string{
		"coredns_test_total{server=dns://:53}":   "3",
		"coredns_test_total{server=dns://:5353}": "1",
		"coredns_test_seconds{}":                 "1",
		"go_goroutines{}":                        "GAUGE",
	} {
		if got[key] != want {
			t.Errorf("%s = %q, want %q", key, got[key], want)
		}
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
