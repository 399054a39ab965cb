package hostname

import (
	"bytes"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/rfc1035label"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/plugins/dhcp/chain"
)

func TestSanitize(t *testing.T) {
	tests := map[string]string{
		"Laptop-01":                           "laptop-01",
		"host.example.com":                    "host",
		"my_pc":                               "my-pc",
		"-bad-":                               "bad",
		"é\x00;rm -rf":                        "rm--rf",
		"":                                    "",
		string(bytes.Repeat([]byte("a"), 80)): string(bytes.Repeat([]byte("a"), 63)),
	}
	for in, want := range tests {
		if got := Sanitize(in); got != want {
			t.Errorf("Sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHostname(t *testing.T) {
	h, _ := setup(chain.Env{Site: cluster.Site{Domain: "branch1.example.com"}})
	wireFQDN := append([]byte{flagE | flagS, 0, 0}, (&rfc1035label.Labels{Labels: []string{"amt-7.corp.example"}}).ToBytes()...)
	tests := []struct {
		name     string
		opt12    string
		opt81    []byte
		reserved string
		msg      dhcpv4.MessageType
		want     string
		want81   []byte
	}{
		{name: "option 12", opt12: "Desk-5", msg: dhcpv4.MessageTypeRequest, want: "desk-5"},
		{name: "reservation wins", opt12: "desk-5", reserved: "printer", msg: dhcpv4.MessageTypeRequest, want: "printer"},
		{name: "ascii option 81", opt81: append([]byte{0, 0, 0}, "nuc.lab"...), msg: dhcpv4.MessageTypeDiscover, want: "nuc",
			want81: append([]byte{0, 255, 255}, "nuc.branch1.example.com"...)},
		{name: "wire option 81", opt81: wireFQDN, msg: dhcpv4.MessageTypeRequest, want: "amt-7",
			want81: append([]byte{flagE | flagO, 255, 255}, (&rfc1035label.Labels{Labels: []string{"amt-7.branch1.example.com"}}).ToBytes()...)},
		{name: "none", msg: dhcpv4.MessageTypeRequest},
		{name: "release ignored", opt12: "x", msg: dhcpv4.MessageTypeRelease},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := dhcpv4.New(dhcpv4.WithMessageType(tt.msg))
			if tt.opt12 != "" {
				req.UpdateOption(dhcpv4.OptHostName(tt.opt12))
			}
			if tt.opt81 != nil {
				req.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionFQDN, tt.opt81))
			}
			resp, _ := dhcpv4.NewReplyFromRequest(req)
			if tt.reserved != "" {
				resp.UpdateOption(dhcpv4.OptHostName(tt.reserved))
			}
			resp, _ = h(req, resp)
			if got := resp.HostName(); got != tt.want {
				t.Fatalf("option 12 = %q, want %q", got, tt.want)
			}
			if got := resp.Options.Get(dhcpv4.OptionFQDN); !bytes.Equal(got, tt.want81) {
				t.Fatalf("option 81 = %q, want %q", got, tt.want81)
			}
		})
	}
}
