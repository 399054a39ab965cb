package server

import (
	"strings"
	"testing"
	"time"
)

func TestCorefile(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{
			name: "all addresses, forward, default ttl",
			cfg:  Config{Listen: ":53", Forward: []string{"192.0.2.53", "192.0.2.54:5300", "2001:db8::53"}},
			want: ".:53 {\n\terrors\n" +
				"\tprovisionserver ID {\n\t\tttl 30\n\t\tfallthrough\n\t}\n" +
				"\tleases ID {\n\t\tttl 30\n\t}\n\tmetrics\n" +
				"\tcache\n\tforward . 192.0.2.53 192.0.2.54:5300 2001:db8::53\n}\n",
		},
		{
			name: "bound, logged, no forward, snippet first",
			cfg:  Config{Listen: "[::1]:5353", TTL: 1500 * time.Millisecond, Log: true, Corefile: "example.test {\n\twhoami\n}"},
			want: "example.test {\n\twhoami\n}\n\n.:5353 {\n\tbind ::1\n\terrors\n\tlog\n" +
				"\tprovisionserver ID {\n\t\tttl 2\n\t\tfallthrough\n\t}\n" +
				"\tleases ID {\n\t\tttl 2\n\t}\n\tmetrics\n" +
				"\ttemplate ANY ANY {\n\t\trcode REFUSED\n\t}\n}\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Corefile(tc.cfg, "ID")
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestCorefileErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Listen: "53"}, "want host:port"},
		{Config{Listen: ":dns"}, "is not a port"},
		{Config{Listen: ":70000"}, "is not a port"},
		{Config{Listen: "eth0:53"}, "is not an IP address"},
		{Config{Listen: ":53", Forward: []string{"resolver.example"}}, `forward "resolver.example"`},
	} {
		if _, err := Corefile(tc.cfg, "ID"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Corefile(%+v) = %v, want an error containing %q", tc.cfg, err, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	base := Config{Listen: ":53", Forward: []string{"192.0.2.53"}}
	tests := []struct {
		snippet string
		want    string // "" = valid
	}{
		{snippet: ""},
		{snippet: "example.test:53 {\n\thosts {\n\t\t192.0.2.7 printer.example.test\n\t}\n}"},
		{snippet: "example.test:53 {\n\tnosuchplugin\n}", want: "dns.corefile:2"},
		{snippet: "example.test:53 {\n\tforward . not-an-address\n}", want: "not-an-address"},
		{snippet: ".:53 {\n\twhoami\n}", want: "serves the root zone on port 53"},
		{snippet: ". {\n\twhoami\n}", want: "serves the root zone on port 53"},
		{snippet: ".:5353 {\n\twhoami\n}"},
		{snippet: "example.test:53 {\n\tprovisionserver someone-elses\n}", want: `no table registered as "someone-elses"`},
		{snippet: "example.test:53 {\n", want: "dns.corefile"},
	}
	for _, tc := range tests {
		t.Run(tc.snippet, func(t *testing.T) {
			cfg := base
			cfg.Corefile = tc.snippet
			err := Validate(cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("valid snippet rejected: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}
