package option15

import (
	"slices"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/plugins/dhcp/chain"
)

func TestOption15(t *testing.T) {
	tests := []struct {
		domain   string
		want     string
		wantErr  bool
		wantNoop bool
	}{
		{domain: "branch1.example.com", want: "branch1.example.com"},
		{domain: "branch1.example.com.", want: "branch1.example.com"},
		{domain: "", wantNoop: true},
		{domain: "bad_domain.com", wantErr: true},
		{domain: "a..b", wantErr: true},
	}
	for _, tt := range tests {
		h, err := setup(chain.Env{Site: cluster.Site{Name: "s", Domain: tt.domain}})
		if (err != nil) != tt.wantErr {
			t.Fatalf("%q: err = %v", tt.domain, err)
		}
		if tt.wantErr {
			continue
		}
		if (h == nil) != tt.wantNoop {
			t.Fatalf("%q: handler nil = %v", tt.domain, h == nil)
		}
		if h == nil {
			continue
		}
		req, _ := dhcpv4.New()
		resp, _ := dhcpv4.NewReplyFromRequest(req)
		resp, _ = h(req, resp)
		// Round-trip through the wire format, as a client sees it.
		back, err := dhcpv4.FromBytes(resp.ToBytes())
		if err != nil {
			t.Fatal(err)
		}
		if got := back.DomainName(); got != tt.want {
			t.Fatalf("option 15 = %q, want %q", got, tt.want)
		}
		if got := back.DomainSearch(); got == nil || !slices.Equal(got.Labels, []string{tt.want}) {
			t.Fatalf("option 119 = %v", got)
		}
	}
}
