package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestDefaultIsValid(t *testing.T) {
	cfg := Default()
	if len(cfg.Sites) != 0 {
		t.Error("the default must not serve DHCP anywhere")
	}
	if cfg.DNS.Listen != "127.0.0.1:5353" || cfg.Node.API != "127.0.0.1:8443" {
		t.Errorf("default listens on %s / %s", cfg.DNS.Listen, cfg.Node.API)
	}
}

func TestValidConfig(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "admin.pass", "Str0ng!Passw0rd\n")
	yml := `
node: {id: box1, data_dir: /tmp/x, api: "127.0.0.1:8443"}
dns: {listen: ":53", forward: ["192.0.2.53"]}
provisioner: {listen: ":9971"}
dhcp: {relay_listen: "0.0.0.0:67"}
sites:
  - name: branch1
    domain: branch1.example.com
    interface: eth1
    subnet: 10.1.0.0/24
    range: [10.1.0.100, 10.1.0.199]
    router: 10.1.0.1
    lease_time: 1h
    reservations: [{mac: "02:00:00:00:00:01", ip: 10.1.0.50}]
    profile: standard
  - name: branch2
    domain: branch2.example.com
    relay: true
    subnet: 10.2.0.0/24
    range: [10.2.0.100, 10.2.0.199]
    router: 10.2.0.1
profiles:
  - name: standard
    admin_password_file: admin.pass
`
	cfg, err := Parse([]byte(yml), dir)
	if err != nil {
		t.Fatalf("unexpected errors:\n%v", err)
	}
	if cfg.Sites[1].LeaseTime.Std().String() != "1h0m0s" {
		t.Errorf("default lease time = %v", cfg.Sites[1].LeaseTime.Std())
	}
}

func TestEveryProblemReportedWithItsField(t *testing.T) {
	dir := t.TempDir()
	yml := `
node: {id: box1, api: "127.0.0.1:8443", colour: blue}
dns: {listen: ":53", ttl: soon}
sites:
  - name: branch1
    domain: branch1.example.com
    interface: eth1
    subnet: 10.1.0.0/24
    range: [10.1.0.100, 10.1.0.250]
    router: 10.1.0.150
    lease_time: forever
    provisioning_cert: {chain: missing-chain.pem, key: missing-key.pem}
  - name: branch1
    domain: BRANCH1.example.com
    interface: eth2
    subnet: 10.1.0.128/25
    range: [10.1.0.200, 10.1.0.300]
`
	_, err := Parse([]byte(yml), dir)
	if err == nil {
		t.Fatal("no error")
	}
	got := err.Error()
	for _, want := range []string{
		"node.colour: unknown key",
		"dns.ttl: \"soon\" is not a duration",
		"sites[0].lease_time: \"forever\" is not a duration",
		"sites[0].range: 10.1.0.100-10.1.0.250 contains the router 10.1.0.150",
		"sites[0].provisioning_cert.chain: cannot read missing-chain.pem",
		"sites[0].provisioning_cert.key: cannot read missing-key.pem",
		"sites[1].name: \"branch1\" is already used by sites[0]",
		"sites[1].domain: \"BRANCH1.example.com\" is already used by sites[0]",
		"sites[1].subnet: 10.1.0.128/25 overlaps sites[0].subnet 10.1.0.0/24",
		"sites[1].range: \"10.1.0.300\" is not an IP address",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	for _, line := range strings.Split(got, "\n") {
		if !strings.Contains(line, ": ") {
			t.Errorf("line without a field path: %q", line)
		}
	}
}

func TestFieldErrors(t *testing.T) {
	tests := []struct{ yml, want string }{
		{"sites: [{name: a, domain: a.example.com, interface: e, subnet: 10.1.0.0/24, range: [10.1.0.100, 10.1.0.250], router: 10.1.0.1}]\n" +
			"", ""},
		{"sites: [{name: a, domain: a.example.com, interface: e, subnet: 10.1.0.0/24, range: [10.1.0.100, 10.1.1.5]}]", "sites[0].range: 10.1.1.5 is outside subnet 10.1.0.0/24"},
		{"sites: [{name: a, domain: localdomain, interface: e, subnet: 10.1.0.0/24, range: [10.1.0.100, 10.1.0.120]}]", "sites[0].domain: \"localdomain\" needs at least two labels"},
		{"sites: [{name: a, domain: a.example.com, subnet: 10.1.0.0/24, range: [10.1.0.100, 10.1.0.120]}]", "sites[0].interface: is required"},
		{"sites: [{name: a, domain: a.example.com, relay: true, subnet: 10.1.0.0/24, range: [10.1.0.100, 10.1.0.120]}]", "dhcp.relay_listen: is required"},
		{"sites: [{name: a, domain: a.example.com, interface: e, subnet: 10.1.0.0/24, range: [10.1.0.100, 10.1.0.120], profile: nope}]", "sites[0].profile: \"nope\" is not a profile"},
		{"node: {cluster: {raft: '10.0.0.1:7000', role: boss}}", "node.cluster.role: \"boss\" is not voter or witness"},
		{"node: {cluster: {raft: '10.0.0.2:7000', join: ['10.0.0.1:7000'], join_token_file: tok}}", ""},
		{"node: {cluster: {raft: '0.0.0.0:7000'}}", "node.cluster.raft: \"0.0.0.0:7000\": give the address other members reach this one at"},
		{"node: {cluster: {raft: '10.0.0.2:7000', join: ['10.0.0.1:7000']}}", "node.cluster.join_token: joining needs the join token"},
		{"node: {cluster: {raft: '10.0.0.3:7000', role: witness, join: ['10.0.0.1:7000'], join_token: x}}\nsites: [{name: a, domain: a.example.com, interface: e, subnet: 10.1.0.0/24}]", "sites: a witness serves no sites"},
		{"dns: {forward: [not-an-ip]}", "dns.forward[0]: \"not-an-ip\" is not an IP address"},
		{"provisioner: {listne: ':9971'}", "provisioner.listne: unknown key (did you mean \"listen\"?)"},
		{"dns: {log: maybe}", "dns.log: \"maybe\" is not a valid boolean"},
		{"sites: {name: a}", "sites: want a list"},
		{"node: [1, 2]", "node: want a mapping"},
		{"profiles: [{name: p, admin_password_file: /nonexistent/pw}]", "profiles[0].admin_password_file: cannot read /nonexistent/pw"},
		{"sites: [{name: a, domain: a.example.com, interface: e, subnet: 10.1.0.0/24, range: [10.1.0.100, 10.1.0.120], reservations: [{mac: zz, ip: 10.1.0.5}]}]", "sites[0].reservations[0].mac: \"zz\" is not a MAC address"},
		{"{{{", "not valid YAML"},
	}
	for _, tc := range tests {
		_, err := Parse([]byte(tc.yml), t.TempDir())
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: unexpected %v", tc.yml, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s:\n got %v\nwant %q", tc.yml, err, tc.want)
		}
	}
}

func TestPasswordNeverEchoed(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "weak.pass", "weakpass-secret")
	_, err := Parse([]byte("profiles: [{name: p, admin_password_file: weak.pass}]"), dir)
	if err == nil || strings.Contains(err.Error(), "weakpass-secret") {
		t.Fatalf("error %v", err)
	}
}

func TestParseSite(t *testing.T) {
	base := Default()
	others := []Site{{Name: "a", Domain: "a.example.com", Interface: "e1", Subnet: "10.1.0.0/24", Range: []string{"10.1.0.10", "10.1.0.20"}}}
	known := func(p string) bool { return p == "std" }
	tests := []struct{ body, want string }{
		{`{"name": "b", "domain": "b.example.com", "interface": "e2", "subnet": "10.2.0.0/24", "range": ["10.2.0.10", "10.2.0.20"], "profile": "std"}`, ""},
		// Replacing a site may keep its own subnet and domain.
		{`{"name": "a", "domain": "a.example.com", "interface": "e1", "subnet": "10.1.0.0/24", "range": ["10.1.0.10", "10.1.0.30"]}`, ""},
		{`{"name": "b", "domain": "a.example.com", "interface": "e2", "subnet": "10.1.0.0/25", "range": ["10.1.0.10", "10.1.0.20"]}`, "site.subnet: 10.1.0.0/25 overlaps"},
		{`{"name": "b", "domain": "b.example.com", "interface": "e2", "subnet": "10.2.0.0/24", "range": ["10.2.0.10", "10.2.0.20"], "profile": "gold"}`, `site.profile: "gold" is not a defined profile`},
		{`{"name": "b", "colour": "red"}`, "site.colour: unknown key"},
		{`[`, "site: not a valid"},
	}
	for _, tc := range tests {
		_, err := base.ParseSite([]byte(tc.body), others, known)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: unexpected %v", tc.body, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s:\n got %v\nwant %q", tc.body, err, tc.want)
		}
	}
}

func TestAgentKeys(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "good.token", "  0123456789abcdef0123-secret-token\n")
	writeFile(t, dir, "short.token", "short-secret\n")
	site := "sites: [{name: a, domain: a.example.com, interface: e, subnet: 10.1.0.0/24, range: [10.1.0.100, 10.1.0.120], agent_token_file: %s}]"
	tests := []struct{ name, yml, want string }{
		{"defaults", "", ""},
		{"off", "provisioner: {agent_listen: 'off'}", ""},
		{"an address", "provisioner: {agent_listen: '10.0.0.1:443'}", ""},
		{"not an address", "provisioner: {agent_listen: 'everywhere'}", `provisioner.agent_listen: "everywhere" is not host:port`},
		{"a token", strings.ReplaceAll(site, "%s", "good.token"), ""},
		{"a short token", strings.ReplaceAll(site, "%s", "short.token"), "sites[0].agent_token_file: the token in short.token has 12 characters; want at least 20"},
		{"no token file", strings.ReplaceAll(site, "%s", "missing.token"), "sites[0].agent_token_file: cannot read missing.token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.yml), dir)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v\nwant %q", err, tc.want)
			case err != nil && strings.Contains(err.Error(), "secret"):
				t.Errorf("the token is in the error: %v", err)
			}
			if tc.name == "defaults" && cfg.Provisioner.AgentListen != DefaultAgent {
				t.Errorf("agent_listen defaults to %q", cfg.Provisioner.AgentListen)
			}
		})
	}
}
