// Package config is branchbox's YAML schema: strict parsing (unknown keys
// are errors) and whole-file validation that reports every problem at once,
// one line each, naming the field path.
package config

import (
	"fmt"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole appliance configuration.
type Config struct {
	Node        Node        `yaml:"node"`
	DNS         DNS         `yaml:"dns"`
	DHCP        DHCP        `yaml:"dhcp"`
	Provisioner Provisioner `yaml:"provisioner"`
	Sites       []Site      `yaml:"sites"`
	Profiles    []Profile   `yaml:"profiles"`

	// Dir is the directory relative file paths are resolved against.
	Dir string `yaml:"-"`
}

// Node is this cluster member.
type Node struct {
	ID       string   `yaml:"id"`
	DataDir  string   `yaml:"data_dir"`
	API      string   `yaml:"api"`
	LogLevel string   `yaml:"log_level"` // debug | info | warn | error
	Cluster  *Cluster `yaml:"cluster"`
}

// Cluster is present when the node is part of a multi-node cluster.
type Cluster struct {
	// Raft is this member's cluster port (raft and member RPC, mutual
	// TLS): the address the others dial, so not a wildcard.
	Raft string   `yaml:"raft"`
	Join []string `yaml:"join"`
	Role string   `yaml:"role"` // voter | witness
	// JoinToken (or JoinTokenFile, which keeps it out of the config) is
	// the founder's `ctl cluster token`; needed only on first start.
	JoinToken     string `yaml:"join_token"`
	JoinTokenFile string `yaml:"join_token_file"`
	// Heartbeat is raft's heartbeat/election timeout: 500ms by default,
	// for members on one LAN; raise it (1s–2s) for a witness across a
	// WAN with round trips over ~50 ms. Every member should use the same.
	Heartbeat Duration `yaml:"heartbeat"`
}

// DNS configures the embedded DNS server.
type DNS struct {
	Disabled bool     `yaml:"disabled"`
	Listen   string   `yaml:"listen"`
	Forward  []string `yaml:"forward"`
	TTL      Duration `yaml:"ttl"`
	Log      bool     `yaml:"log"`
	// Corefile is an extra Corefile snippet served beside the generated
	// configuration.
	Corefile string `yaml:"corefile"`
}

// DHCP holds server-wide DHCP settings; per-scope settings live on sites.
type DHCP struct {
	// RelayListen is where relayed (giaddr) requests arrive; empty means
	// relay sites are not served.
	RelayListen string `yaml:"relay_listen"`
}

// Provisioner configures the AMT hello listener and the device agents'
// API.
type Provisioner struct {
	Listen string `yaml:"listen"`
	// AgentListen is the HTTPS listener branchbox-agent talks to; "off"
	// disables it.
	AgentListen string `yaml:"agent_listen"`
	// Advertise overrides the addresses published as ProvisionServer for
	// relayed sites (directly attached sites use the interface address).
	Advertise []string `yaml:"advertise"`
}

// Site is one branch LAN.
type Site struct {
	Name             string        `yaml:"name"`
	Domain           string        `yaml:"domain"`
	Interface        string        `yaml:"interface"`
	Relay            bool          `yaml:"relay"`
	Subnet           string        `yaml:"subnet"`
	Range            []string      `yaml:"range"`
	Router           string        `yaml:"router"`
	LeaseTime        Duration      `yaml:"lease_time"`
	DNSServers       []string      `yaml:"dns_servers"`
	Reservations     []Reservation `yaml:"reservations"`
	NextServer       string        `yaml:"next_server"`
	BootFile         string        `yaml:"boot_file"`
	ProvisioningCert *CertFiles    `yaml:"provisioning_cert"`
	Profile          string        `yaml:"profile"`
	NamingTemplate   string        `yaml:"naming_template"`
	AllowTemplate    bool          `yaml:"allow_template"`
	// AgentTokenFile holds the token the site's device agents prove they
	// know; without one the site accepts no agents.
	AgentTokenFile string `yaml:"agent_token_file"`
}

// Reservation pins an address to a MAC or client identifier.
type Reservation struct {
	MAC      string `yaml:"mac"`
	ClientID string `yaml:"client_id"`
	IP       string `yaml:"ip"`
	Hostname string `yaml:"hostname"`
}

// CertFiles names a PEM chain (leaf first, root last) and its key.
type CertFiles struct {
	Chain string `yaml:"chain"`
	Key   string `yaml:"key"`
}

// Profile is what activated devices are configured with.
type Profile struct {
	Name              string `yaml:"name"`
	AdminPasswordFile string `yaml:"admin_password_file"`
	MEBxPasswordFile  string `yaml:"mebx_password_file"`
	KVM               *bool  `yaml:"kvm"`
	SOL               *bool  `yaml:"sol"`
	IDER              *bool  `yaml:"ider"`
	UserConsent       string `yaml:"user_consent"` // none | kvm | all
	TimeSync          *bool  `yaml:"time_sync"`
	TLS               bool   `yaml:"tls"`
}

// Duration is a time.Duration written as "1h", "90s", …
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("want a duration like 1h or 30s")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration (want e.g. 1h, 30m, 90s)", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Std returns the value as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }
