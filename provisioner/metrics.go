package provisioner

import (
	"regexp"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	hellos      *prometheus.CounterVec
	activations *prometheus.CounterVec
	failures    *prometheus.CounterVec
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
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "branchbox_provisioner_failures_total",
			Help: "Devices that failed, by reason: certificate:<rule>, unreachable, otp, psk, profile, naming, firmware (a WS-Man call refused), other.",
		}, []string{"reason"}),
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
		reg.MustRegister(m.hellos, m.activations, m.failures, m.inflight, m.duration)
	}
	return m
}

var ruleInReason = regexp.MustCompile(`rule ([a-z0-9-]+)`)

// failureReason maps a failure message to a small, fixed set of labels, so
// the series stay few whatever the message says.
func failureReason(msg string) string {
	if m := ruleInReason.FindStringSubmatch(msg); m != nil {
		return "certificate:" + m[1]
	}
	l := strings.ToLower(msg)
	for _, c := range []struct{ word, label string }{
		{"refused the provisioning certificate", "certificate:refused"},
		{"one-time password", "otp"},
		{"psk", "psk"},
		{"naming template", "naming"},
		{"profile", "profile"},
		{"returned", "firmware"},
		{"connect", "unreachable"},
		{"dial", "unreachable"},
		{"timeout", "unreachable"},
	} {
		if strings.Contains(l, c.word) {
			return c.label
		}
	}
	return "other"
}
