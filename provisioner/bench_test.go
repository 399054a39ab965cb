package provisioner

import (
	"slices"
	"testing"
	"time"

	"github.com/branchbox/branchbox/cluster"
)

// BenchmarkActivate200 activates 200 fake devices at once over real TCP
// and TLS on loopback and reports throughput and hello-to-activated
// latency. It measures the provisioner, not firmware: the fake answers
// instantly.
func BenchmarkActivate200(b *testing.B) {
	const n = 200
	for range b.N {
		b.StopTimer()
		e := newEnv(b)
		for i := range n {
			e.device(i)
		}
		sent := make([]time.Time, n)
		b.StartTimer()
		start := time.Now()
		for i := range n {
			sent[i] = time.Now()
			e.send(i, e.helloFor(i, true))
		}
		lat := make([]time.Duration, n)
		for i := range n {
			d := e.wait(uuidOf(i), cluster.DeviceActivated)
			lat[i] = d.Updated.Sub(sent[i])
		}
		elapsed := time.Since(start)
		b.StopTimer()
		slices.Sort(lat)
		b.ReportMetric(float64(n)/elapsed.Seconds(), "activations/s")
		b.ReportMetric(lat[n/2].Seconds()*1000, "p50_ms")
		b.ReportMetric(lat[n*99/100].Seconds()*1000, "p99_ms")
	}
}
