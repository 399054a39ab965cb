package router

import (
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/plugins/dhcp/chain"
)

func TestRouter(t *testing.T) {
	subnet := netip.MustParsePrefix("10.1.0.0/24")
	tests := []struct {
		router    string
		wantErr   bool
		wantNoop  bool
		wantRoute net.IP
	}{
		{router: "10.1.0.1", wantRoute: net.IPv4(10, 1, 0, 1)},
		{router: "", wantNoop: true},
		{router: "10.2.0.1", wantErr: true},
		{router: "not-an-ip", wantErr: true},
		{router: "fe80::1", wantErr: true},
	}
	for _, tt := range tests {
		h, err := setup(chain.Env{Site: cluster.Site{Name: "s", Router: tt.router}, Subnet: subnet})
		if (err != nil) != tt.wantErr {
			t.Fatalf("%q: err = %v", tt.router, err)
		}
		if tt.wantErr {
			continue
		}
		if (h == nil) != tt.wantNoop {
			t.Fatalf("%q: handler nil = %v", tt.router, h == nil)
		}
		if h == nil {
			continue
		}
		req, _ := dhcpv4.New()
		resp, _ := dhcpv4.NewReplyFromRequest(req)
		resp, _ = h(req, resp)
		if got := resp.Router(); len(got) != 1 || !got[0].Equal(tt.wantRoute) {
			t.Fatalf("%q: option 3 = %v", tt.router, got)
		}
	}
}
