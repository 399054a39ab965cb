package server

import (
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// FuzzProcess feeds arbitrary datagrams to the request path (and the read
// loop's DISCOVER peek), as received
// on a site interface and on the relay listener. It must never panic, and
// whatever it answers must be a well-formed reply that encodes.
func FuzzProcess(f *testing.F) {
	f.Add(discoverPkt(f, hw(1), nil))
	f.Add(discoverPkt(f, hw(2), net.IPv4(10, 2, 0, 1)))
	f.Add(requestPkt(f, hw(3), nil, net.IPv4(10, 1, 0, 150), net.IPv4(10, 1, 0, 2)))
	f.Add(msg(f, dhcpv4.WithHwAddr(hw(4)), dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 1, 0, 100)))))
	f.Add([]byte{1, 1, 6, 0})
	s, _ := newTestServer(f, nil)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		peekType(pkt) // the read loop's peek must survive anything too
		for _, iface := range []string{"eth-b1", ""} {
			reply, dst := s.answer(iface, pkt)
			if reply == nil {
				continue
			}
			if dst == nil || reply.OpCode != dhcpv4.OpcodeBootReply {
				t.Fatalf("reply %v to %v", reply, dst)
			}
			if _, err := dhcpv4.FromBytes(reply.ToBytes()); err != nil {
				t.Fatalf("reply does not decode: %v", err)
			}
		}
	})
}
