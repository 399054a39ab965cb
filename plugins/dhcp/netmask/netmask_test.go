package netmask

import (
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/branchbox/branchbox/plugins/dhcp/chain"
)

func TestNetmask(t *testing.T) {
	tests := []struct{ subnet, want string }{
		{"10.1.0.0/24", "ffffff00"},
		{"10.0.0.0/16", "ffff0000"},
		{"192.168.7.128/25", "ffffff80"},
	}
	for _, tt := range tests {
		h, err := setup(chain.Env{Subnet: netip.MustParsePrefix(tt.subnet)})
		if err != nil {
			t.Fatal(err)
		}
		req, _ := dhcpv4.New()
		resp, _ := dhcpv4.NewReplyFromRequest(req)
		resp, _ = h(req, resp)
		if got := resp.SubnetMask().String(); got != tt.want {
			t.Errorf("%s: mask %s, want %s", tt.subnet, got, tt.want)
		}
	}
	if _, err := setup(chain.Env{}); err == nil {
		t.Error("setup without a subnet succeeded")
	}
}
