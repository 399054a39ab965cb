package chain

import (
	"errors"
	"net"
	"slices"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// tag returns a plugin that appends its name to option 15 so tests can see
// which handlers ran, in which order.
func tag(name string, stop, drop bool) Plugin {
	return Plugin{Name: name, Setup: func(Env) (Handler, error) {
		return func(req, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool) {
			if drop {
				return nil, true
			}
			resp.UpdateOption(dhcpv4.OptDomainName(resp.DomainName() + name))
			return resp, stop
		}, nil
	}}
}

func TestRun(t *testing.T) {
	inactive := Plugin{Name: "off", Setup: func(Env) (Handler, error) { return nil, nil }}
	r, err := NewRegistry(tag("a", false, false), tag("b", true, false), tag("c", false, false), tag("x", false, true), inactive)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		names     []string
		wantRan   string
		wantNil   bool
		wantNames []string
	}{
		{names: []string{"a", "c"}, wantRan: "ac", wantNames: []string{"a", "c"}},
		{names: []string{"a", "b", "c"}, wantRan: "ab", wantNames: []string{"a", "b", "c"}},
		{names: []string{"a", "x", "c"}, wantNil: true, wantNames: []string{"a", "x", "c"}},
		{names: []string{"off", "c"}, wantRan: "c", wantNames: []string{"c"}},
	}
	for _, tt := range tests {
		c, err := r.Build(Env{}, tt.names...)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(c.Names(), tt.wantNames) {
			t.Errorf("%v: active %v, want %v", tt.names, c.Names(), tt.wantNames)
		}
		req, _ := dhcpv4.New()
		resp, _ := dhcpv4.NewReplyFromRequest(req)
		out := c.Run(req, resp)
		if (out == nil) != tt.wantNil {
			t.Fatalf("%v: nil reply = %v", tt.names, out == nil)
		}
		if out != nil && out.DomainName() != tt.wantRan {
			t.Errorf("%v: ran %q, want %q", tt.names, out.DomainName(), tt.wantRan)
		}
	}
}

func TestRegistryErrors(t *testing.T) {
	if _, err := NewRegistry(tag("a", false, false), tag("a", false, false)); err == nil {
		t.Error("duplicate plugin accepted")
	}
	if _, err := NewRegistry(Plugin{Name: "nosetup"}); err == nil {
		t.Error("plugin without setup accepted")
	}
	broken := Plugin{Name: "broken", Setup: func(Env) (Handler, error) { return nil, errors.New("bad config") }}
	r, _ := NewRegistry(broken)
	if _, err := r.Build(Env{}, "broken"); err == nil {
		t.Error("setup error not returned")
	}
	if _, err := r.Build(Env{}, "missing"); err == nil {
		t.Error("unknown plugin accepted")
	}
}

func TestRequestHelpers(t *testing.T) {
	mac := net.HardwareAddr{0xAA, 0xBB, 0xCC, 0, 0, 1}
	req, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac))
	if got := ClientID(req); got != "aa:bb:cc:00:00:01" {
		t.Errorf("ClientID without option 61 = %q", got)
	}
	req.UpdateOption(dhcpv4.OptClientIdentifier([]byte{1, 0xaa, 0xbb}))
	if got := ClientID(req); got != "01aabb" {
		t.Errorf("ClientID with option 61 = %q", got)
	}
	if RequestedAddr(req).IsValid() {
		t.Error("RequestedAddr of an empty request is valid")
	}
	req.ClientIPAddr = net.IPv4(10, 0, 0, 5)
	if got := RequestedAddr(req).String(); got != "10.0.0.5" {
		t.Errorf("RequestedAddr from ciaddr = %s", got)
	}
	req.UpdateOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 0, 0, 6)))
	if got := RequestedAddr(req).String(); got != "10.0.0.6" {
		t.Errorf("RequestedAddr prefers option 50, got %s", got)
	}
	resp, _ := dhcpv4.NewReplyFromRequest(req)
	resp.UpdateOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 0, 0, 1)))
	resp.UpdateOption(dhcpv4.OptDomainName("x.example"))
	resp.YourIPAddr = net.IPv4(10, 0, 0, 6)
	NAK(resp, "no")
	if !IsNAK(resp) || resp.DomainName() != "" || !resp.YourIPAddr.IsUnspecified() || resp.ServerIdentifier() == nil || resp.Message() != "no" {
		t.Errorf("NAK kept or lost the wrong things: %s", resp.Summary())
	}
}
