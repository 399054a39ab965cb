package metrics

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Collector re-exports the metric families of g whose names start with
// "coredns_" through another registry. CoreDNS registers its metrics in
// prometheus.DefaultRegisterer at package init; registering
// Collector(prometheus.DefaultGatherer) in the appliance's registry puts
// them on the appliance's /metrics beside its own, without the duplicates
// (Go runtime, process) both registries carry.
func Collector(g prometheus.Gatherer) prometheus.Collector {
	return &gathered{g: g}
}

type gathered struct{ g prometheus.Gatherer }

// Describe sends nothing: the families are only known at scrape time, so
// this is an unchecked collector.
func (*gathered) Describe(chan<- *prometheus.Desc) {}

func (c *gathered) Collect(ch chan<- prometheus.Metric) {
	families, err := c.g.Gather()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(prometheus.NewDesc("coredns_gather_error", "Gathering CoreDNS metrics failed.", nil, nil), err)
		return
	}
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "coredns_") {
			continue
		}
		for _, m := range f.GetMetric() {
			names := make([]string, 0, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				names = append(names, l.GetName())
			}
			ch <- &copied{desc: prometheus.NewDesc(f.GetName(), f.GetHelp(), names, nil), m: m}
		}
	}
}

// copied is one already-gathered sample.
type copied struct {
	desc *prometheus.Desc
	m    *dto.Metric
}

func (c *copied) Desc() *prometheus.Desc { return c.desc }

func (c *copied) Write(out *dto.Metric) error {
	out.Label = c.m.Label
	out.Gauge = c.m.Gauge
	out.Counter = c.m.Counter
	out.Summary = c.m.Summary
	out.Untyped = c.m.Untyped
	out.Histogram = c.m.Histogram
	out.TimestampMs = c.m.TimestampMs
	return nil
}
