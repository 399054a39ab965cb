package provisioner

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	hellos      *prometheus.CounterVec
	activations *prometheus.CounterVec
	inflight    prometheus.Gauge
	duration    prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		hellos: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "branchbox_provisioner_hellos_total",
			Help: "AMT hello connections by outcome.",
		}, []string{"result"}),
		activations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "branchbox_provisioner_activations_total",
			Help: "Activation sessions by outcome.",
		}, []string{"result"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "branchbox_provisioner_sessions_inflight",
			Help: "Activation sessions running now.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "branchbox_provisioner_hello_to_activated_seconds",
			Help:    "Time from a device's hello to its confirmed activation.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.hellos, m.activations, m.inflight, m.duration)
	}
	return m
}
