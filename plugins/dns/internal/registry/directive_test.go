package registry

import (
	"strings"
	"testing"

	"github.com/coredns/caddy"

	"github.com/branchbox/branchbox/plugins/dns/internal/zone"
)

func TestParseDirective(t *testing.T) {
	var r Registry[*int]
	table := new(int)
	remove, err := r.Add("t1", table)
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	tests := []struct {
		input   string
		wantErr string
		want    Settings
	}{
		{input: "tbl t1", want: Settings{TTL: zone.DefaultTTL}},
		{input: "tbl t1 {\n ttl 5\n fallthrough\n}", want: Settings{TTL: 5, Fallthrough: true}},
		{input: "tbl", wantErr: "Wrong argument count"},
		{input: "tbl a b", wantErr: "Wrong argument count"},
		{input: "tbl missing", wantErr: `no table registered as "missing"`},
		{input: "tbl t1 {\n ttl 0\n}", wantErr: "want whole seconds"},
		{input: "tbl t1 {\n ttl 30s\n}", wantErr: "want whole seconds"},
		{input: "tbl t1 {\n ttl 86401\n}", wantErr: "want whole seconds"},
		{input: "tbl t1 {\n ttl\n}", wantErr: "Wrong argument count"},
		{input: "tbl t1 {\n fallthrough example.com\n}", wantErr: "Wrong argument count"},
		{input: "tbl t1 {\n cache 5\n}", wantErr: `unknown property "cache"`},
		{input: "tbl t1\ntbl t1", wantErr: "only be used once"},
	}
	for _, tc := range tests {
		t.Run(tc.input, func(t *testing.T) {
			got, set, err := r.ParseDirective(caddy.NewTestController("dns", tc.input))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != table || set != tc.want {
				t.Fatalf("parsed %v %+v", got, set)
			}
		})
	}
}
