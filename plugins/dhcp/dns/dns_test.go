package dns

import (
	"net"
	"slices"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/plugins/dhcp/chain"
)

func TestDNS(t *testing.T) {
	self := net.IPv4(10, 1, 0, 2)
	tests := []struct {
		name    string
		servers []string
		self    net.IP
		want    []string
		wantErr bool
	}{
		{name: "appliance itself", self: self, want: []string{"10.1.0.2"}},
		{name: "override", servers: []string{"192.0.2.53", "192.0.2.54"}, self: self, want: []string{"192.0.2.53", "192.0.2.54"}},
		{name: "bad override", servers: []string{"nope"}, self: self, wantErr: true},
		{name: "nothing to offer", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := setup(chain.Env{Site: cluster.Site{Name: "s", DNSServers: tt.servers}, ServerIP: tt.self})
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if err != nil {
				return
			}
			req, _ := dhcpv4.New()
			resp, _ := dhcpv4.NewReplyFromRequest(req)
			resp, _ = h(req, resp)
			var got []string
			for _, ip := range resp.DNS() {
				got = append(got, ip.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("option 6 = %v, want %v", got, tt.want)
			}
		})
	}
}
