package server

import (
	"net"
	"testing"
)

// BenchmarkProcess is the server's own work for one relayed exchange,
// DISCOVER to OFFER and REQUEST to ACK (its commit in the in-memory
// store), without the sockets: the part of a lease's CPU that is ours
// rather than the kernel's or raft's.
func BenchmarkProcess(b *testing.B) {
	s, _ := newTestServer(b, nil)
	gi := net.IPv4(10, 2, 0, 1)
	var discovers, requests [][]byte
	for i := range 100 {
		mac := net.HardwareAddr{2, 0, 0, 1, byte(i >> 8), byte(i)}
		discovers = append(discovers, discoverPkt(b, mac, gi))
		offer, _ := s.answer("", discovers[i])
		if offer == nil {
			b.Fatal("no OFFER")
		}
		requests = append(requests, requestPkt(b, mac, gi, offer.YourIPAddr, offer.ServerIdentifier()))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k := i % len(discovers)
		if offer, _ := s.answer("", discovers[k]); offer == nil {
			b.Fatal("no OFFER")
		}
		ack, _ := s.answer("", requests[k])
		if ack == nil {
			b.Fatal("no ACK")
		}
		_ = ack.ToBytes()
		i++
	}
}
