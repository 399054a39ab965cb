// Package device is the simulated Intel AMT firmware: provisioning state,
// control mode, credentials, hash table and the setup methods with the
// return codes of amt-protocol.md §3. Transports (TLS, WS-Man, hello) live in
// other packages and call into a Device.
package device

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/branchbox/branchbox/tests/amtsim/firmware"
	"github.com/branchbox/branchbox/tests/amtsim/hello"
)

// DefaultMEBxPassword is the factory MEBx (and initial admin) password.
const DefaultMEBxPassword = "admin"

// AdminUser is the AMT administrator account name.
const AdminUser = "admin"

// LocalUser is the OS-side account LMS clients use before activation.
const LocalUser = "$$OsAdmin"

// Faults make the device misbehave in ways real devices do.
type Faults struct {
	DropResponseAfterCommit bool          // CommitChanges/AdminSetup/Setup commit, then the connection closes without a response
	WrongRealm              bool          // AMT_GeneralSettings reports a realm that is not the one digest auth uses
	WindowExpired           bool          // the provisioning window is already closed at boot
	HashInactive            bool          // custom root hashes are present but inactive
	Slow                    time.Duration // delay before every WS-Man response
	ResetAtRequest          int           // once: TCP reset instead of answering the Nth WS-Man request of a connection
	RebootDuringActivation  bool          // once: the device reboots instead of answering CommitChanges/AdminSetup/Setup
	RebootDowntime          time.Duration // how long a reboot keeps the device off the network
}

// CustomHash is a user-defined root hash (MEBx "Manage Hashes" or setup.bin).
type CustomHash struct {
	Name string
	Alg  hello.HashAlg
	Sum  []byte
}

// Config describes a device at manufacture.
type Config struct {
	UUID         hello.UUID
	Profile      firmware.Profile
	DNSSuffix    string // DHCP option 15 (the boot path may set it later)
	PKISuffix    string // MEBx/USB trusted suffix; takes precedence over DNSSuffix
	CustomHashes []CustomHash
	OTP          string // ProvisioningServerOTP a local agent set before boot (MEI can set it later)
	PID          string // one-touch PID: the device sends v2 hellos (AMT < 11 only)
	// MAC of the wired interface (GetLANInterfaceSettings); derived from the
	// UUID when nil.
	MAC net.HardwareAddr
	// IPv4 is a static address; the boot path sets a DHCP one instead.
	IPv4 net.IP

	// SetupMode starts the device in-provisioning with the hello window
	// open; otherwise it starts pre-provisioning (host-based setup only).
	SetupMode     bool
	FirstWindow   time.Duration // window at first boot (24 h on real devices)
	LaterWindow   time.Duration // window after unprovision (6 h)
	AllowedModes  []ControlMode // default ACM and CCM
	LocalPassword string        // $$OsAdmin password (1..32 printable ASCII); random when empty
	RCFGDigest    bool          // during remote configuration demand digest admin/<MEBx password>
	// StrictElementNames refuses go-wsman-messages v1.8.1's
	// SetAdminACLEntryEx_INPUT spelling instead of only logging it.
	StrictElementNames bool

	Faults Faults
	Log    *slog.Logger
	Now    func() time.Time
	// OnChange is called (without locks held) after every state change.
	OnChange func(Status)
}

// Status is a snapshot for logs and the status endpoint. Its identity
// fields are what an OS agent reads over MEI (branchbox-agent info prints
// the same names).
type Status struct {
	UUID        string    `json:"uuid"`
	AMTVersion  string    `json:"amt_version"`
	Build       string    `json:"build"`
	SKU         string    `json:"sku"`
	State       string    `json:"state"`
	ControlMode string    `json:"control_mode"`
	DNSSuffix   string    `json:"dns_suffix"`
	Event       string    `json:"event,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	WindowEnd   time.Time `json:"window_end,omitempty"`
	Rebooting   bool      `json:"rebooting,omitempty"`
	// Features is what a provisioner configured after activation.
	Features FeatureStatus `json:"features"`
	// Hashes is the root-certificate hash table in handle order; like
	// Audit, only the status endpoint carries it, not every state-change
	// line.
	Hashes []HashStatus `json:"hashes,omitempty"`
	// Audit is the device's security audit log, newest last.
	Audit []AuditRecord `json:"audit,omitempty"`
}

// HashStatus is one hash-table entry as GetCertificateHashEntry reports it.
type HashStatus struct {
	Name      string `json:"name"`
	Algorithm string `json:"algorithm"` // SHA1, SHA256 or SHA384
	Hash      string `json:"hash"`      // lower-case hex
	Active    bool   `json:"active"`
	Default   bool   `json:"default"`
}

// AuditRecord is one entry of the device's audit log: AMT records security
// events (provisioning, refused TLS sessions) in firmware, and a refused
// provisioning chain is recorded with the certificate rule it broke.
type AuditRecord struct {
	Time   time.Time `json:"time"`
	Event  string    `json:"event"`
	Rule   string    `json:"rule,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// auditCapacity bounds the log the way firmware storage does: oldest out.
const auditCapacity = 64

// FeatureStatus is the redirection, consent and TLS configuration in force.
type FeatureStatus struct {
	SOL                 bool      `json:"sol"`
	IDER                bool      `json:"ider"`
	RedirectionListener bool      `json:"redirection_listener"`
	KVM                 bool      `json:"kvm"`
	UserConsent         string    `json:"user_consent"`
	TLS                 TLSStatus `json:"tls"`
}

// Device is one simulated AMT device. All methods are safe for concurrent use.
type Device struct {
	cfg    Config
	log    *slog.Logger
	now    func() time.Time
	faults *Faults

	mu            sync.Mutex
	table         *firmware.HashTable
	state         ProvisioningState
	mode          ControlMode
	realm         string // the realm digest auth and password hashes use
	mebx          string
	mebxChanged   bool
	adminHA1      []byte // MD5(admin:realm:password); nil until set
	staged        staged
	pkiSuffix     string
	dnsSuffix     string
	nonce         [20]byte
	chain         []certEntry
	chainStatus   int
	windowEnd     time.Time
	clockOffset   time.Duration
	lastTa0       int64
	lastError     string
	audit         []AuditRecord
	rebootUntil   time.Time
	tlsCert       tls.Certificate
	localPassword string
	feat          features
	tls           tlsStore
	otp           string
	mac           net.HardwareAddr
	ipv4          net.IP
	dhcp          bool
	windowUsed    bool // the first (long) provisioning window has been opened
}

// staged holds remote-configuration settings until CommitChanges.
type staged struct {
	mebx     string
	adminHA1 []byte
}

// New manufactures a device.
func New(cfg Config) (*Device, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.FirstWindow == 0 {
		cfg.FirstWindow = 24 * time.Hour
	}
	if cfg.LaterWindow == 0 {
		cfg.LaterWindow = 6 * time.Hour
	}
	if len(cfg.AllowedModes) == 0 {
		cfg.AllowedModes = []ControlMode{ModeAdmin, ModeClient}
	}
	if cfg.Faults.RebootDowntime == 0 {
		cfg.Faults.RebootDowntime = 3 * time.Second
	}
	if cfg.LocalPassword != "" {
		if err := checkLocalPassword(cfg.LocalPassword); err != nil {
			return nil, fmt.Errorf("device %s: %w", cfg.UUID, err)
		}
	}
	if cfg.MAC == nil {
		cfg.MAC = MACFor(cfg.UUID)
	}
	if len(cfg.MAC) != 6 {
		return nil, fmt.Errorf("device %s: MAC %s is not 6 bytes", cfg.UUID, cfg.MAC)
	}
	if cfg.IPv4 != nil && cfg.IPv4.To4() == nil {
		return nil, fmt.Errorf("device %s: address %s is not IPv4", cfg.UUID, cfg.IPv4)
	}
	if cfg.PID != "" && !cfg.Profile.PSKHello {
		return nil, fmt.Errorf("device %s: AMT %s has no one-touch (PSK) provisioning", cfg.UUID, cfg.Profile.Name)
	}
	table, err := firmware.NewHashTable(cfg.Profile)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", cfg.UUID, err)
	}
	for _, h := range cfg.CustomHashes {
		if err := table.AddCustom(cfg.Profile, h.Name, h.Alg, h.Sum, !cfg.Faults.HashInactive); err != nil {
			return nil, fmt.Errorf("device %s: %w", cfg.UUID, err)
		}
	}
	faults := cfg.Faults
	d := &Device{
		cfg: cfg, now: cfg.Now, faults: &faults, table: table,
		log:           cfg.Log.With("uuid", cfg.UUID.String()),
		mebx:          DefaultMEBxPassword,
		pkiSuffix:     cfg.PKISuffix,
		dnsSuffix:     cfg.DNSSuffix,
		realm:         "Digest:" + strings.ToUpper(randomHex(16)),
		localPassword: cfg.LocalPassword,
		feat:          factoryFeatures(),
		tls:           newTLSStore(),
		otp:           cfg.OTP,
		mac:           cfg.MAC,
		ipv4:          cfg.IPv4.To4(),
	}
	if d.localPassword == "" {
		d.localPassword = randomHex(16)
	}
	if _, err := rand.Read(d.nonce[:]); err != nil {
		return nil, err
	}
	if d.tlsCert, err = selfSignedCert(cfg.UUID); err != nil {
		return nil, fmt.Errorf("device %s: %w", cfg.UUID, err)
	}
	if cfg.SetupMode {
		d.state = InProvisioning
		d.windowUsed = true
		d.windowEnd = d.now().Add(cfg.FirstWindow)
		if faults.WindowExpired {
			d.windowEnd = d.now()
		}
	}
	return d, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b)
}

// UUID returns the device UUID.
func (d *Device) UUID() hello.UUID { return d.cfg.UUID }

// Profile returns the firmware profile.
func (d *Device) Profile() firmware.Profile { return d.cfg.Profile }

// Faults returns the device's fault knobs (read-only use).
func (d *Device) Faults() Faults {
	d.mu.Lock()
	defer d.mu.Unlock()
	return *d.faults
}

// ConsumeReset reports whether the Nth request of a connection must be
// answered with a TCP reset; the fault fires once.
func (d *Device) ConsumeReset(n int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.faults.ResetAtRequest > 0 && d.faults.ResetAtRequest == n {
		d.faults.ResetAtRequest = 0
		d.lastError = fmt.Sprintf("fault: TCP reset at request %d", n)
		return true
	}
	return false
}

// ConsumeReboot reports whether an activation call must trigger the reboot
// fault; it fires once.
func (d *Device) ConsumeReboot() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.faults.RebootDuringActivation {
		d.faults.RebootDuringActivation = false
		return true
	}
	return false
}

// LocalPassword is the $$OsAdmin password an OS agent would read over MEI.
func (d *Device) LocalPassword() string { return d.localPassword }

// Status snapshots the device.
func (d *Device) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.statusLocked("")
	s.Audit = append([]AuditRecord(nil), d.audit...)
	for _, e := range d.table.Entries {
		s.Hashes = append(s.Hashes, HashStatus{
			Name: e.Name, Algorithm: hashAlgName(e.Alg), Hash: hex.EncodeToString(e.Sum), Active: e.Active, Default: e.Default,
		})
	}
	return s
}

func hashAlgName(a hello.HashAlg) string {
	switch a {
	case hello.SHA1:
		return "SHA1"
	case hello.SHA256:
		return "SHA256"
	case hello.SHA384:
		return "SHA384"
	}
	return a.String()
}

// Audit returns a copy of the audit log.
func (d *Device) Audit() []AuditRecord {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]AuditRecord(nil), d.audit...)
}

func (d *Device) auditLocked(event string, rule firmware.Rule, detail string) {
	if len(d.audit) == auditCapacity {
		d.audit = append(d.audit[:0], d.audit[1:]...)
	}
	d.audit = append(d.audit, AuditRecord{Time: d.clock(), Event: event, Rule: string(rule), Detail: detail})
}

// clock is the device's own real-time clock, as a provisioning server's
// time synchronisation set it.
func (d *Device) clock() time.Time { return d.now().Add(d.clockOffset) }

func (d *Device) statusLocked(event string) Status {
	s := Status{
		UUID: d.cfg.UUID.String(), AMTVersion: d.cfg.Profile.Version, Build: d.cfg.Profile.Build, SKU: d.cfg.Profile.SKU,
		State: d.state.String(), ControlMode: d.mode.String(), DNSSuffix: d.trustedSuffixLocked(),
		Event: event, LastError: d.lastError, Rebooting: d.now().Before(d.rebootUntil),
		Features: FeatureStatus{
			SOL: d.feat.sol, IDER: d.feat.ider, RedirectionListener: d.feat.listener, KVM: d.feat.kvm,
			UserConsent: ConsentName(d.feat.optIn), TLS: d.tlsStatusLocked(),
		},
	}
	if d.state == InProvisioning {
		s.WindowEnd = d.windowEnd
	}
	return s
}

// changed logs and publishes a state change; call with d.mu held, it
// schedules the callback for after the unlock.
func (d *Device) changed(event string) func() {
	st := d.statusLocked(event)
	d.log.Info("device state", "event", event, "state", st.State, "control_mode", st.ControlMode)
	cb := d.cfg.OnChange
	return func() {
		if cb != nil {
			cb(st)
		}
	}
}

// failure records a refused operation for the status endpoint and the log.
func (d *Device) failure(op string, code int, why string) int {
	d.lastError = fmt.Sprintf("%s returned %d: %s", op, code, why)
	d.log.Warn("operation refused", "op", op, "return_value", code, "reason", why)
	return code
}

// Note records an event reported by a transport (TLS rejection and such).
func (d *Device) Note(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lastError = fmt.Sprintf(format, args...)
}

// TrustedSuffix is the suffix certificate CNs are matched against.
func (d *Device) TrustedSuffix() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.trustedSuffixLocked()
}

func (d *Device) trustedSuffixLocked() string {
	if d.pkiSuffix != "" {
		return d.pkiSuffix
	}
	return d.dnsSuffix
}

// SetDHCPLease records the address and option 15 the boot path learnt.
func (d *Device) SetDHCPLease(ip net.IP, suffix string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ipv4, d.dhcp, d.dnsSuffix = ip.To4(), true, suffix
}

// Network returns the wired interface's MAC and IPv4 address (nil before
// DHCP).
func (d *Device) Network() (net.HardwareAddr, net.IP) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mac, d.ipv4
}

// MACFor derives a stable, locally administered unicast MAC from the UUID,
// so that a device keeps its MAC across runs.
func MACFor(u hello.UUID) net.HardwareAddr {
	s := sha256.Sum256(u[:])
	mac := net.HardwareAddr(s[:6])
	mac[0] = mac[0]&0xfe | 0x02
	return mac
}

// Hello builds the hello packet for the given retry count.
func (d *Device) Hello(retry uint32) (hello.Packet, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := hello.Packet{AdminCredentialsSet: d.mebxChanged, RetryCount: retry, UUID: d.cfg.UUID}
	if d.cfg.PID != "" {
		p.Version, p.PID = hello.VersionPSK, d.cfg.PID
		return p, nil
	}
	p.Version, p.Hashes = hello.VersionPKI, d.table.Active()
	return p, nil
}

// WindowOpen reports whether the device is in setup mode with its
// provisioning window open (it sends hellos and accepts RCFG sessions).
func (d *Device) WindowOpen() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.windowOpenLocked()
}

func (d *Device) windowOpenLocked() bool {
	now := d.now()
	return d.state == InProvisioning && now.Before(d.windowEnd) && !now.Before(d.rebootUntil) && !d.faults.WindowExpired
}

// RemoteReachable reports whether the remote (16993) interface is up: during
// an open window, or once provisioned; never while rebooting.
func (d *Device) RemoteReachable() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.now().Before(d.rebootUntil) {
		return false
	}
	return d.windowOpenLocked() || d.state == PostProvisioning
}

// State returns provisioning state and control mode.
func (d *Device) State() (ProvisioningState, ControlMode) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state, d.mode
}

// TLSCertificate is the device's current self-signed server certificate.
func (d *Device) TLSCertificate() *tls.Certificate {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.tlsCert
	return &c
}

// NeedsClientChain reports whether a TLS client must present a provisioning
// chain: only while remote configuration is pending.
func (d *Device) NeedsClientChain() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state == InProvisioning
}

// CheckClientChain applies the firmware certificate rules to the chain a
// remote-configuration client presented during the TLS handshake.
func (d *Device) CheckClientChain(raw [][]byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	chain, err := firmware.ParseChain(raw)
	if err == nil {
		err = firmware.CheckChain(d.cfg.Profile, d.table, d.trustedSuffixLocked(), d.clock(), chain)
	}
	if err != nil {
		d.refuseLocked(err)
		return err
	}
	d.log.Debug("TLS client chain passes the certificate rules", "leaf", chain[0].Subject.CommonName, "certs", len(chain))
	return nil
}

// RefuseClient records a remote-configuration TLS session the transport
// refused for a certificate rule it enforces itself.
func (d *Device) RefuseClient(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.refuseLocked(err)
}

func (d *Device) refuseLocked(err error) {
	rule, _ := firmware.FailedRule(err)
	d.lastError = "TLS client chain refused: " + err.Error()
	d.auditLocked("tls-client-refused", rule, err.Error())
	d.log.Warn("TLS client chain refused", "rule", string(rule), "reason", err.Error())
}

// AcceptClient records a completed remote-configuration TLS handshake.
func (d *Device) AcceptClient(leaf *x509.Certificate, certs int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.auditLocked("tls-client-accepted", "", fmt.Sprintf("leaf %q, %d certificate(s)", leaf.Subject.CommonName, certs))
	d.log.Info("TLS client chain accepted", "leaf", leaf.Subject.CommonName, "certs", certs)
}

// Reboot simulates a firmware reset: uncommitted configuration and the
// injected chain are lost, a new TLS key is made, and the device is off the
// network for the downtime.
func (d *Device) Reboot() {
	d.mu.Lock()
	d.staged = staged{}
	d.tls.staged, d.tls.dirty = d.tls.active, false
	d.chain, d.chainStatus = nil, ChainNotStarted
	if d.tls.serving == nil {
		if c, err := selfSignedCert(d.cfg.UUID); err == nil {
			d.tlsCert = c
		}
	}
	_, _ = rand.Read(d.nonce[:])
	d.rebootUntil = d.now().Add(d.faults.RebootDowntime)
	d.lastError = "fault: rebooted during activation"
	publish := d.changed("reboot")
	d.mu.Unlock()
	publish()
}

// RebootUntil is when a running reboot ends.
func (d *Device) RebootUntil() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rebootUntil
}

// Realm is the realm digest authentication uses.
func (d *Device) Realm() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.realm
}

// ReportedRealm is the DigestRealm AMT_GeneralSettings shows; it differs
// from Realm only under the WrongRealm fault.
func (d *Device) ReportedRealm() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.faults.WrongRealm {
		sum := md5.Sum([]byte(d.realm))
		return "Digest:" + strings.ToUpper(hex.EncodeToString(sum[:]))
	}
	return d.realm
}

// HA1 computes MD5(user:realm:password), the digest secret.
func HA1(user, realm, password string) []byte {
	s := md5.Sum([]byte(user + ":" + realm + ":" + password))
	return s[:]
}

// Transport says where a WS-Man request came from.
type Transport int

const (
	Remote Transport = iota // network, TLS on 16993
	Local                   // host side through LMS (plain HTTP on 16992)
)

// Credentials returns whether digest authentication is required for a
// request on the transport, and the HA1 of each acceptable user.
func (d *Device) Credentials(t Transport) (required bool, users map[string][]byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	users = map[string][]byte{}
	if t == Local {
		users[LocalUser] = HA1(LocalUser, d.realm, d.localPassword)
		if d.adminHA1 != nil {
			users[AdminUser] = d.adminHA1
		}
		return true, users
	}
	switch d.state {
	case InProvisioning:
		// The TLS client chain is the authentication; digest with the
		// current MEBx password is tolerated (amt-protocol.md §3.2).
		users[AdminUser] = HA1(AdminUser, d.realm, d.mebx)
		return d.cfg.RCFGDigest, users
	case PostProvisioning:
		if d.adminHA1 != nil {
			users[AdminUser] = d.adminHA1
		}
	}
	return true, users
}

// StrictElementNames reports whether misspelt method elements are refused.
func (d *Device) StrictElementNames() bool { return d.cfg.StrictElementNames }

// Log is the device's logger.
func (d *Device) Log() *slog.Logger { return d.log }
