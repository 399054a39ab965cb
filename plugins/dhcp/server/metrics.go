package server

import (
	"errors"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a packet is dropped, as the "reason" label of dropped_total.
const (
	dropNotLeader = "not_leader"
	dropMalformed = "malformed"
	dropWrongOp   = "wrong_op"
	dropHWType    = "bad_hw"
	dropMsgType   = "bad_message_type"
	dropNoSite    = "no_site"
	// A link broadcast seen by the relay listener; normal, not an error.
	dropLinkBroadcast = "link_broadcast_on_relay_listener"
	dropOverload      = "overload"
	dropStale         = "stale"
	dropNoAddress     = "no_address"
	dropSendError     = "send_error"
	dropCommitFailed  = "commit_failed"
)

type metrics struct {
	requests     *prometheus.CounterVec
	replies      *prometheus.CounterVec
	dropped      *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	siteRequests *prometheus.CounterVec
	inFlight     prometheus.Gauge
	expired      prometheus.Counter

	// Children of the vectors for the message types RFC 2131 defines,
	// looked up once: hashing the label on every packet showed in profiles.
	types [dhcpv4.MessageTypeInform + 1]typeMetrics
}

type typeMetrics struct {
	requests, replies prometheus.Counter
	latency           prometheus.Observer
}

// of returns the metrics of message type t.
func (m *metrics) of(t dhcpv4.MessageType) typeMetrics {
	if t > 0 && int(t) < len(m.types) {
		return m.types[t]
	}
	l := t.String()
	return typeMetrics{m.requests.WithLabelValues(l), m.replies.WithLabelValues(l), m.latency.WithLabelValues(l)}
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "branchbox_dhcp_requests_total", Help: "DHCP requests received and parsed, by message type.",
		}, []string{"type"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "branchbox_dhcp_replies_total", Help: "DHCP replies sent, by message type.",
		}, []string{"type"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "branchbox_dhcp_dropped_total", Help: "DHCP packets dropped without a reply, by reason.",
		}, []string{"reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "branchbox_dhcp_handle_seconds",
			Help:    "Time from receiving a request to sending its reply, including the lease commit.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"type"}),
		siteRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "branchbox_dhcp_site_requests_total", Help: "DHCP requests matched to a site, by site.",
		}, []string{"site"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "branchbox_dhcp_in_flight", Help: "Requests being handled right now.",
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "branchbox_dhcp_leases_expired_total", Help: "Leases reclaimed by expiry sweeps.",
		}),
	}
	for t := range m.types[1:] {
		l := dhcpv4.MessageType(t + 1).String()
		m.types[t+1] = typeMetrics{m.requests.WithLabelValues(l), m.replies.WithLabelValues(l), m.latency.WithLabelValues(l)}
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.replies, m.dropped, m.latency, m.siteRequests, m.inFlight, m.expired} {
		if err := reg.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return nil, err
		}
	}
	return m, nil
}
