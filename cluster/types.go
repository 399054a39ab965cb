package cluster

import "time"

// Sealed holds a secret encrypted with the cluster seal key. Only the
// ciphertext ever enters the raft log, snapshots or API output; callers
// unseal with Store.Unseal when they need the plaintext.
type Sealed []byte

// Site is one branch LAN: its DHCP scope, DNS domain and provisioning
// material. Sites come from the config file (Source "config") or the API.
type Site struct {
	Name         string        `json:"name"`
	Domain       string        `json:"domain"`
	Interface    string        `json:"interface,omitempty"`
	Relay        bool          `json:"relay,omitempty"`
	Subnet       string        `json:"subnet"` // CIDR
	RangeStart   string        `json:"range_start,omitempty"`
	RangeEnd     string        `json:"range_end,omitempty"`
	Router       string        `json:"router,omitempty"`
	DNSServers   []string      `json:"dns_servers,omitempty"` // overrides "the appliance's own address"
	LeaseTime    time.Duration `json:"lease_time,omitempty"`
	Reservations []Reservation `json:"reservations,omitempty"`
	NextServer   string        `json:"next_server,omitempty"` // option 66 / siaddr
	BootFile     string        `json:"boot_file,omitempty"`   // option 67
	Profile      string        `json:"profile,omitempty"`
	// CertChainPEM is the provisioning chain, leaf first, root last.
	CertChainPEM string `json:"cert_chain_pem,omitempty"`
	CertKey      Sealed `json:"cert_key,omitempty"`
	// AgentToken authenticates the site's device agents (branchbox-agent);
	// none means the site accepts no agents.
	AgentToken Sealed `json:"agent_token,omitempty"`
	// NamingTemplate builds an FQDN host label for devices with no
	// inventory entry and no DHCP hostname, e.g. "amt-{uuid8}".
	NamingTemplate string `json:"naming_template,omitempty"`
	AllowTemplate  bool   `json:"allow_template,omitempty"`
	Source         string `json:"source,omitempty"`
}

// Reservation pins an address to a MAC or a DHCP client identifier.
type Reservation struct {
	MAC      string `json:"mac,omitempty"`
	ClientID string `json:"client_id,omitempty"` // hex of option 61
	IP       string `json:"ip"`
	Hostname string `json:"hostname,omitempty"`
}

// Profile is what an activated device is configured with.
type Profile struct {
	Name          string `json:"name"`
	AdminPassword Sealed `json:"admin_password,omitempty"`
	MEBxPassword  Sealed `json:"mebx_password,omitempty"`
	KVM           bool   `json:"kvm"`
	SOL           bool   `json:"sol"`
	IDER          bool   `json:"ider"`
	UserConsent   string `json:"user_consent,omitempty"` // none | kvm | all
	TimeSync      bool   `json:"time_sync"`
	TLS           bool   `json:"tls"`
	Source        string `json:"source,omitempty"`
}

// Device states, as the API reports them.
const (
	DeviceSeen       = "seen"
	DeviceActivating = "activating"
	DeviceActivated  = "activated"
	DeviceFailed     = "failed"
)

// Device is one AMT machine the appliance knows about.
type Device struct {
	UUID        string        `json:"uuid"`
	Site        string        `json:"site,omitempty"`
	FQDN        string        `json:"fqdn,omitempty"`
	Hostname    string        `json:"hostname,omitempty"` // from inventory
	Profile     string        `json:"profile,omitempty"`
	State       string        `json:"state"`
	AMTVersion  string        `json:"amt_version,omitempty"`
	IP          string        `json:"ip,omitempty"`
	Hashes      []string      `json:"hashes,omitempty"` // hex root hashes from the last hello
	PID         string        `json:"pid,omitempty"`
	LastError   string        `json:"last_error,omitempty"`
	Updated     time.Time     `json:"updated"`
	History     []DeviceEvent `json:"history,omitempty"`
	Inventoried bool          `json:"inventoried,omitempty"`
}

// DeviceEvent is one step in a device's life, kept on the device record.
type DeviceEvent struct {
	Time   time.Time `json:"time"`
	State  string    `json:"state"`
	Step   string    `json:"step,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// OTP is a one-time password registered for an agent-initiated activation.
type OTP struct {
	UUID       string    `json:"uuid"`
	Secret     Sealed    `json:"secret"`
	Created    time.Time `json:"created"`
	Expires    time.Time `json:"expires"`
	ConsumedBy string    `json:"consumed_by,omitempty"` // request id of the consume that won
	ConsumedAt time.Time `json:"consumed_at,omitzero"`
}

// PSKPair is a TLS-PSK provisioning identifier and its pass phrase.
type PSKPair struct {
	PID     string    `json:"pid"`
	PPS     Sealed    `json:"pps"`
	Site    string    `json:"site"`
	Created time.Time `json:"created"`
	UsedBy  string    `json:"used_by,omitempty"` // device UUID
}

// Lease states.
const (
	LeaseBound    = "bound"
	LeaseDeclined = "declined" // quarantined after DHCPDECLINE
)

// Lease is one DHCP binding, committed before the ACK leaves.
type Lease struct {
	IP       string    `json:"ip"`
	MAC      string    `json:"mac,omitempty"`
	ClientID string    `json:"client_id"` // the key the server binds on (option 61 hex, else MAC)
	Hostname string    `json:"hostname,omitempty"`
	Site     string    `json:"site"`
	State    string    `json:"state"`
	Start    time.Time `json:"start"`
	Expires  time.Time `json:"expires"`
}

// AuditEntry is one line of the append-only audit log.
type AuditEntry struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Actor   string    `json:"actor"`
	Action  string    `json:"action"`
	Subject string    `json:"subject,omitempty"`
	Detail  string    `json:"detail,omitempty"`
}
