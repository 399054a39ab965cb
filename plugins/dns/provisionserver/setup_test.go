package provisionserver

import (
	"strings"
	"testing"

	"github.com/coredns/caddy"

	"github.com/branchbox/branchbox/plugins/dns/internal/zone"
)

func TestParse(t *testing.T) {
	table := NewTable(storeWithSites(t), staticAddrs(nil))
	remove, err := Register("setup-test", table)
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	tests := []struct {
		input   string
		wantErr string
		wantTTL uint32
		fall    bool
	}{
		// The grammar itself is tested once, in registry.
		{input: "provisionserver setup-test", wantTTL: zone.DefaultTTL},
		{input: "provisionserver setup-test {\n ttl 5\n fallthrough\n}", wantTTL: 5, fall: true},
		{input: "provisionserver missing", wantErr: `no table registered as "missing"`},
	}
	for _, tc := range tests {
		t.Run(tc.input, func(t *testing.T) {
			p, err := parse(caddy.NewTestController("dns", tc.input))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.TTL != tc.wantTTL || p.Fallthrough != tc.fall || p.Table != table {
				t.Fatalf("parsed %+v", p)
			}
		})
	}
}

func TestRegisterTwice(t *testing.T) {
	table := NewTable(storeWithSites(t), staticAddrs(nil))
	remove, err := Register("twice", table)
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	if _, err := Register("twice", table); err == nil {
		t.Fatal("second registration under one id succeeded")
	}
}
