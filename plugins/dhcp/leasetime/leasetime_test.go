package leasetime

import (
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/plugins/dhcp/chain"
)

func TestLeaseTime(t *testing.T) {
	tests := []struct {
		name      string
		site      time.Duration
		msg       dhcpv4.MessageType
		want      time.Duration
		wantUnset bool
	}{
		{name: "site value", site: 2 * time.Hour, msg: dhcpv4.MessageTypeDiscover, want: 2 * time.Hour},
		{name: "default", msg: dhcpv4.MessageTypeRequest, want: chain.DefaultLeaseTime},
		{name: "inform gets none", site: time.Hour, msg: dhcpv4.MessageTypeInform, wantUnset: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := setup(chain.Env{Site: cluster.Site{LeaseTime: tt.site}})
			req, _ := dhcpv4.New(dhcpv4.WithMessageType(tt.msg))
			resp, _ := dhcpv4.NewReplyFromRequest(req)
			resp, _ = h(req, resp)
			if tt.wantUnset {
				if resp.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
					t.Fatal("option 51 set on an INFORM reply")
				}
				return
			}
			if got := resp.IPAddressLeaseTime(0); got != tt.want {
				t.Fatalf("option 51 = %v, want %v", got, tt.want)
			}
			if got := resp.IPAddressRenewalTime(0); got != tt.want/2 {
				t.Fatalf("option 58 = %v", got)
			}
			if got := resp.IPAddressRebindingTime(0); got != tt.want*7/8 {
				t.Fatalf("option 59 = %v", got)
			}
		})
	}
}
