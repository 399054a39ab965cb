package reservations

import (
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/plugins/dhcp/chain"
)

func TestReservations(t *testing.T) {
	env := chain.Env{
		Site: cluster.Site{Name: "s", Reservations: []cluster.Reservation{
			{MAC: "AA:BB:CC:00:00:01", IP: "10.1.0.10", Hostname: "printer"},
			{ClientID: "01:aa:bb:cc:00:00:02", IP: "10.1.0.11"},
		}},
		Subnet: netip.MustParsePrefix("10.1.0.0/24"),
	}
	h, err := setup(env)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		mac      string
		clientID []byte
		msg      dhcpv4.MessageType
		want     string
		wantHost string
	}{
		{name: "by mac", mac: "aa:bb:cc:00:00:01", msg: dhcpv4.MessageTypeDiscover, want: "10.1.0.10", wantHost: "printer"},
		{name: "by client id", mac: "aa:bb:cc:00:00:99", clientID: []byte{1, 0xaa, 0xbb, 0xcc, 0, 0, 2}, msg: dhcpv4.MessageTypeRequest, want: "10.1.0.11"},
		{name: "unknown client", mac: "aa:bb:cc:00:00:03", msg: dhcpv4.MessageTypeDiscover, want: "0.0.0.0"},
		{name: "inform untouched", mac: "aa:bb:cc:00:00:01", msg: dhcpv4.MessageTypeInform, want: "0.0.0.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mac, _ := net.ParseMAC(tt.mac)
			req, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(tt.msg))
			if tt.clientID != nil {
				req.UpdateOption(dhcpv4.OptClientIdentifier(tt.clientID))
			}
			resp, _ := dhcpv4.NewReplyFromRequest(req)
			resp, stop := h(req, resp)
			if stop || resp == nil {
				t.Fatal("reservations must never stop the chain")
			}
			if got := resp.YourIPAddr.String(); got != tt.want {
				t.Fatalf("yiaddr = %s, want %s", got, tt.want)
			}
			if got := resp.HostName(); got != tt.wantHost {
				t.Fatalf("host name = %q, want %q", got, tt.wantHost)
			}
		})
	}
}

func TestReservationErrors(t *testing.T) {
	subnet := netip.MustParsePrefix("10.1.0.0/24")
	tests := []struct {
		name string
		r    []cluster.Reservation
	}{
		{"outside subnet", []cluster.Reservation{{MAC: "aa:bb:cc:00:00:01", IP: "10.2.0.1"}}},
		{"bad ip", []cluster.Reservation{{MAC: "aa:bb:cc:00:00:01", IP: "x"}}},
		{"bad mac", []cluster.Reservation{{MAC: "zz", IP: "10.1.0.1"}}},
		{"bad client id", []cluster.Reservation{{ClientID: "xyz", IP: "10.1.0.1"}}},
		{"no key", []cluster.Reservation{{IP: "10.1.0.1"}}},
		{"same ip twice", []cluster.Reservation{{MAC: "aa:bb:cc:00:00:01", IP: "10.1.0.1"}, {MAC: "aa:bb:cc:00:00:02", IP: "10.1.0.1"}}},
	}
	for _, tt := range tests {
		if _, err := setup(chain.Env{Site: cluster.Site{Name: "s", Reservations: tt.r}, Subnet: subnet}); err == nil {
			t.Errorf("%s: setup succeeded", tt.name)
		}
	}
}
