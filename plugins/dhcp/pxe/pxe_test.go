package pxe

import (
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/plugins/dhcp/chain"
)

func TestPXE(t *testing.T) {
	tests := []struct {
		name, next, file string
		wantNoop         bool
		wantSiaddr       net.IP
	}{
		{name: "nothing set", wantNoop: true},
		{name: "address and file", next: "10.1.0.5", file: "ipxe.efi", wantSiaddr: net.IPv4(10, 1, 0, 5)},
		{name: "host name", next: "tftp.branch1.example.com", file: "pxelinux.0", wantSiaddr: net.IPv4zero},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := setup(chain.Env{Site: cluster.Site{NextServer: tt.next, BootFile: tt.file}})
			if err != nil {
				t.Fatal(err)
			}
			if (h == nil) != tt.wantNoop {
				t.Fatalf("handler nil = %v", h == nil)
			}
			if h == nil {
				return
			}
			req, _ := dhcpv4.New()
			resp, _ := dhcpv4.NewReplyFromRequest(req)
			resp, _ = h(req, resp)
			back, err := dhcpv4.FromBytes(resp.ToBytes())
			if err != nil {
				t.Fatal(err)
			}
			if back.TFTPServerName() != tt.next || back.BootFileNameOption() != tt.file || back.BootFileName != tt.file {
				t.Fatalf("66=%q 67=%q file=%q", back.TFTPServerName(), back.BootFileNameOption(), back.BootFileName)
			}
			if !back.ServerIPAddr.Equal(tt.wantSiaddr) {
				t.Fatalf("siaddr = %v, want %v", back.ServerIPAddr, tt.wantSiaddr)
			}
		})
	}
}
