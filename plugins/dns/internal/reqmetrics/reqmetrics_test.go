package reqmetrics

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/coredns/coredns/plugin/metrics/vars"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

type remote struct {
	dns.ResponseWriter
	addr net.Addr
}

func (r remote) RemoteAddr() net.Addr { return r.addr }

func TestCount(t *testing.T) {
	tests := []struct {
		name               string
		addr               net.Addr
		qtype              uint16
		proto, family      string
		typeLabel          string
		plugin, rcodeLabel string
	}{
		{"udp v4", &net.UDPAddr{IP: net.ParseIP("10.1.0.5"), Port: 5353}, dns.TypeA, "udp", "1", "A", "provisionserver", "NOERROR"},
		{"tcp v6", &net.TCPAddr{IP: net.ParseIP("fd00::5"), Port: 5353}, dns.TypeAAAA, "tcp", "2", "AAAA", "leases", "NOERROR"},
		{"unlisted type", &net.UDPAddr{IP: net.ParseIP("10.1.0.5"), Port: 5353}, dns.TypeNAPTR, "udp", "1", "other", "provisionserver", "NOERROR"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			requests := vars.RequestCount.WithLabelValues("", ".", "", tc.proto, tc.family, tc.typeLabel)
			responses := vars.ResponseRcode.WithLabelValues("", ".", "", tc.rcodeLabel, tc.plugin)
			r0, s0 := value(t, requests), value(t, responses)
			r := new(dns.Msg)
			r.SetQuestion("provisionserver.branch1.example.com.", tc.qtype)
			Count(context.Background(), remote{addr: tc.addr}, r, dns.RcodeSuccess, tc.plugin, time.Now())
			Count(context.Background(), remote{addr: tc.addr}, r, dns.RcodeSuccess, tc.plugin, time.Now())
			if got := value(t, requests) - r0; got != 2 {
				t.Errorf("requests counted %v, want 2", got)
			}
			if got := value(t, responses) - s0; got != 2 {
				t.Errorf("responses counted %v, want 2", got)
			}
		})
	}
}

func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
