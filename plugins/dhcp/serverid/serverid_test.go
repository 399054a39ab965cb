package serverid

import (
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/plugins/dhcp/chain"
)

func TestServerID(t *testing.T) {
	peer := func(site string, addr net.IP) bool { return site == "s" && addr.Equal(net.IPv4(10, 0, 0, 3)) }
	h, err := setup(chain.Env{Site: cluster.Site{Name: "s"}, ServerIP: net.IPv4(10, 0, 0, 1), Peer: peer})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		theirs   net.IP
		wantDrop bool
	}{
		{"no server id", nil, false},
		{"ours", net.IPv4(10, 0, 0, 1), false},
		{"another server", net.IPv4(10, 0, 0, 2), true},
		{"another member of this cluster", net.IPv4(10, 0, 0, 3), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest))
			if tt.theirs != nil {
				req.UpdateOption(dhcpv4.OptServerIdentifier(tt.theirs))
			}
			resp, _ := dhcpv4.NewReplyFromRequest(req)
			got, _ := h(req, resp)
			if (got == nil) != tt.wantDrop {
				t.Fatalf("dropped = %v, want %v", got == nil, tt.wantDrop)
			}
			if got != nil && !got.ServerIdentifier().Equal(net.IPv4(10, 0, 0, 1)) {
				t.Fatalf("option 54 = %v", got.ServerIdentifier())
			}
		})
	}
}

func TestServerIDNeedsAddress(t *testing.T) {
	if _, err := setup(chain.Env{Site: cluster.Site{Name: "s"}}); err == nil {
		t.Fatal("setup without a server address succeeded")
	}
}
