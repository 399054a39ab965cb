package mei

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/branchbox/branchbox/provisioner/hello"
)

// Client issues PTHI commands one at a time over a Transport.
type Client struct {
	mu sync.Mutex
	t  Transport
}

// NewClient wraps a connected transport.
func NewClient(t Transport) *Client { return &Client{t: t} }

// Open connects to the AMTHI client named by spec: "unix:PATH" for a Unix
// socket (amtsim), anything else a MEI character device such as /dev/mei0.
// timeout bounds each command's round trip.
func Open(spec string, timeout time.Duration) (*Client, error) {
	t, err := Dial(spec, timeout)
	if err != nil {
		return nil, err
	}
	return NewClient(t), nil
}

// Close releases the transport.
func (c *Client) Close() error { return c.t.Close() }

func (c *Client) call(cmd Command, payload []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	msg, err := c.t.RoundTrip(encodeRequest(cmd, payload))
	if err != nil {
		return nil, fmt.Errorf("pthi %s: %w", cmd, err)
	}
	return checkResponse(cmd, msg)
}

// exact checks a fixed-size payload.
func exact(c Command, p []byte, n int) error {
	if len(p) != n {
		return frameErr(c, "%d payload bytes after the status, want %d", len(p), n)
	}
	return nil
}

// cString is a NUL-padded fixed-size char array.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// ---- GetCodeVersions (0x0400001A) ----

// CodeVersions is the firmware's version table.
type CodeVersions struct {
	BIOS     string
	Versions []VersionEntry
}

// VersionEntry is one (description, version) pair, e.g. ("AMT", "16.1.25").
type VersionEntry struct {
	Description, Version string
}

// Lookup returns the version of the entry with that description; rpc-go
// amtinfo reads "AMT", "Build Number" and "Sku" this way.
func (v CodeVersions) Lookup(description string) (string, bool) {
	for _, e := range v.Versions {
		if e.Description == description {
			return e.Version, true
		}
	}
	return "", false
}

// Layout (rpc-go pkg/pthi/types.go CodeVersions, LMS GetCodeVersionCommand.h,
// MeshCentral amt-mei.js getVersion): BiosVersion char[65], count u32, then
// entries of two AMT_UNICODE_STRINGs {u16 length, char[20]}. LMS parses
// `count` entries; rpc-go reads a fixed array of 50 — so both exactly
// `count` entries and a full 50-entry array are accepted, nothing else.
const (
	biosVersionLen    = 65
	unicodeStringLen  = 20
	versionEntryLen   = 2 * (2 + unicodeStringLen)
	maxVersionEntries = 50
)

func decodeCodeVersions(p []byte) (CodeVersions, error) {
	const c = CmdGetCodeVersions
	if len(p) < biosVersionLen+4 {
		return CodeVersions{}, frameErr(c, "%d payload bytes, shorter than BIOS version and count (%d)", len(p), biosVersionLen+4)
	}
	n := binary.LittleEndian.Uint32(p[biosVersionLen:])
	if n > maxVersionEntries {
		return CodeVersions{}, frameErr(c, "%d version entries, at most %d", n, maxVersionEntries)
	}
	body := p[biosVersionLen+4:]
	if len(body) != int(n)*versionEntryLen && len(body) != maxVersionEntries*versionEntryLen {
		return CodeVersions{}, frameErr(c, "%d bytes of entries for count %d, want %d or %d",
			len(body), n, int(n)*versionEntryLen, maxVersionEntries*versionEntryLen)
	}
	v := CodeVersions{BIOS: cString(p[:biosVersionLen]), Versions: make([]VersionEntry, n)}
	for i := range v.Versions {
		e := body[i*versionEntryLen:]
		d, err := unicodeString(c, e[:2+unicodeStringLen])
		if err != nil {
			return CodeVersions{}, fmt.Errorf("entry %d description: %w", i, err)
		}
		ver, err := unicodeString(c, e[2+unicodeStringLen:versionEntryLen])
		if err != nil {
			return CodeVersions{}, fmt.Errorf("entry %d version: %w", i, err)
		}
		v.Versions[i] = VersionEntry{Description: d, Version: ver}
	}
	return v, nil
}

// unicodeString decodes {u16 length, char[20]}. Firmware may count a
// terminating NUL in the length (rpc-go strips NULs from the version for
// that reason), so the text ends at the first NUL within length.
func unicodeString(c Command, b []byte) (string, error) {
	n := binary.LittleEndian.Uint16(b)
	if n > unicodeStringLen {
		return "", frameErr(c, "string length %d exceeds %d", n, unicodeStringLen)
	}
	return cString(b[2 : 2+n]), nil
}

// GetCodeVersions reads the version table.
func (c *Client) GetCodeVersions() (CodeVersions, error) {
	p, err := c.call(CmdGetCodeVersions, nil)
	if err != nil {
		return CodeVersions{}, err
	}
	return decodeCodeVersions(p)
}

// ---- GetProvisioningState (0x04000011), GetControlMode (0x0400006B) ----

// ProvisioningState is AMT_PROVISIONING_STATE (LMS AMTHICommand.h).
type ProvisioningState uint32

// Provisioning states.
const (
	PreProvisioning  ProvisioningState = 0
	InProvisioning   ProvisioningState = 1
	PostProvisioning ProvisioningState = 2
)

// String uses the names amtsim's status and the agent's info print.
func (s ProvisioningState) String() string {
	switch s {
	case PreProvisioning:
		return "pre-provisioning"
	case InProvisioning:
		return "in-provisioning"
	case PostProvisioning:
		return "post-provisioning"
	}
	return fmt.Sprintf("provisioning-state(%d)", uint32(s))
}

// ControlMode is 0 none, 1 client (CCM), 2 admin (ACM): rpc-go amtinfo,
// MeshCentral amt-mei.js getControlMode ["NONE_RPAT", "CLIENT", "ADMIN"].
type ControlMode uint32

// Control modes.
const (
	ControlNone ControlMode = 0
	ControlCCM  ControlMode = 1
	ControlACM  ControlMode = 2
)

func (m ControlMode) String() string {
	switch m {
	case ControlNone:
		return "none"
	case ControlCCM:
		return "ccm"
	case ControlACM:
		return "acm"
	}
	return fmt.Sprintf("control-mode(%d)", uint32(m))
}

func decodeU32(c Command, p []byte, limit uint32) (uint32, error) {
	if err := exact(c, p, 4); err != nil {
		return 0, err
	}
	v := binary.LittleEndian.Uint32(p)
	if v > limit {
		return 0, frameErr(c, "value %d out of range 0..%d", v, limit)
	}
	return v, nil
}

func decodeProvisioningState(p []byte) (ProvisioningState, error) {
	v, err := decodeU32(CmdGetProvisioningState, p, uint32(PostProvisioning))
	return ProvisioningState(v), err
}

func decodeControlMode(p []byte) (ControlMode, error) {
	v, err := decodeU32(CmdGetControlMode, p, uint32(ControlACM))
	return ControlMode(v), err
}

// GetProvisioningState reads the provisioning state (u32).
func (c *Client) GetProvisioningState() (ProvisioningState, error) {
	p, err := c.call(CmdGetProvisioningState, nil)
	if err != nil {
		return 0, err
	}
	return decodeProvisioningState(p)
}

// GetControlMode reads the control mode (u32).
func (c *Client) GetControlMode() (ControlMode, error) {
	p, err := c.call(CmdGetControlMode, nil)
	if err != nil {
		return 0, err
	}
	return decodeControlMode(p)
}

// ---- GetUUID (0x0400005C) ----

// UUID is the platform UUID in RFC 4122 byte order.
type UUID [16]byte

func (u UUID) String() string { return hello.FormatUUID(u) }

// decodeUUID takes the 16 wire bytes, a little-endian "mixed" GUID — the
// same order as the hello (amt-protocol.md §2.3): the first three fields
// are byte-swapped, as rpc-go pkg/amt/commands.go GetUUID and MeshCentral
// amt-mei.js getUuid format it.
func decodeUUID(p []byte) (UUID, error) {
	var u UUID
	if err := exact(CmdGetUUID, p, 16); err != nil {
		return u, err
	}
	u[0], u[1], u[2], u[3] = p[3], p[2], p[1], p[0]
	u[4], u[5] = p[5], p[4]
	u[6], u[7] = p[7], p[6]
	copy(u[8:], p[8:16])
	return u, nil
}

// GetUUID reads the platform UUID.
func (c *Client) GetUUID() (UUID, error) {
	p, err := c.call(CmdGetUUID, nil)
	if err != nil {
		return UUID{}, err
	}
	return decodeUUID(p)
}

// ---- GetPkiFqdnSuffix (0x04000036) ----

// ansiString decodes an AMT_ANSI_STRING (u16 length + chars) that ends the
// payload. Intel's LMS (AmtAnsiString.cpp) takes everything after the
// length as the string, which is right only when firmware sends exactly
// `length` characters — so exactly that is required.
func ansiString(c Command, p []byte, what string) (string, error) {
	if len(p) < 2 {
		return "", frameErr(c, "%s: %d bytes, shorter than its 2-byte length", what, len(p))
	}
	n := int(binary.LittleEndian.Uint16(p))
	if len(p)-2 != n {
		return "", frameErr(c, "%s: length %d but %d characters follow", what, n, len(p)-2)
	}
	return cString(p[2:]), nil
}

func decodePkiFqdnSuffix(p []byte) (string, error) {
	return ansiString(CmdGetPkiFqdnSuffix, p, "suffix")
}

// GetPkiFqdnSuffix reads the DNS suffix the firmware matches provisioning
// certificates against (the PKI DNS suffix, else DHCP option 15).
func (c *Client) GetPkiFqdnSuffix() (string, error) {
	p, err := c.call(CmdGetPkiFqdnSuffix, nil)
	if err != nil {
		return "", err
	}
	return decodePkiFqdnSuffix(p)
}

// ---- EnumerateHashHandles (0x0400002C), GetCertificateHashEntry (0x0400002D) ----

// maxHashHandles is rpc-go's CERT_HASH_MAX_NUMBER (pkg/pthi/types.go).
const maxHashHandles = 33

// Layout: count u32 + handles u32[count] (LMS EnumerateHashHandlesCommand.h
// parseSimpleArray32); rpc-go reads a fixed u32[33], so a full array after
// the count is accepted too.
func decodeHashHandles(p []byte) ([]uint32, error) {
	const c = CmdEnumerateHashHandles
	if len(p) < 4 {
		return nil, frameErr(c, "%d payload bytes, shorter than the count", len(p))
	}
	n := binary.LittleEndian.Uint32(p)
	if n > maxHashHandles {
		return nil, frameErr(c, "%d handles, at most %d", n, maxHashHandles)
	}
	body := p[4:]
	if len(body) != int(n)*4 && len(body) != maxHashHandles*4 {
		return nil, frameErr(c, "%d bytes of handles for count %d, want %d or %d", len(body), n, n*4, maxHashHandles*4)
	}
	h := make([]uint32, n)
	for i := range h {
		h[i] = binary.LittleEndian.Uint32(body[4*i:])
	}
	return h, nil
}

// EnumerateHashHandles lists the handles of the root-certificate hash table.
func (c *Client) EnumerateHashHandles() ([]uint32, error) {
	p, err := c.call(CmdEnumerateHashHandles, nil)
	if err != nil {
		return nil, err
	}
	return decodeHashHandles(p)
}

// HashAlgorithm is CERT_HASH_ALGORITHM: 1 SHA-1, 2 SHA-256, 3 SHA-384
// (amt-protocol.md §4.2 after Intel and rpc-go; MeshCentral's and LMS's
// "SHA512" for 3 is the known mistake noted there) — the same type byte
// the hello's hash entries carry.
type HashAlgorithm = hello.HashAlg

// Hash algorithms.
const (
	SHA1   = hello.SHA1
	SHA256 = hello.SHA256
	SHA384 = hello.SHA384
)

// CertHashEntry is one trusted root hash.
type CertHashEntry struct {
	Name      string
	Algorithm HashAlgorithm
	Hash      []byte // Algorithm.Size() bytes
	Active    bool
	Default   bool
}

// GetCertificateHashEntryRequest names one handle from EnumerateHashHandles.
type GetCertificateHashEntryRequest struct {
	Handle uint32
}

func (r GetCertificateHashEntryRequest) marshal() []byte {
	return binary.LittleEndian.AppendUint32(nil, r.Handle)
}

// Layout (amt-protocol.md §4.2; rpc-go CertHashEntry; LMS
// GetCertificateHashEntryCommand.h; MeshCentral getCertHashEntry reads the
// algorithm at 72 and the name length at 73): IsDefault u32, IsActive u32,
// CertificateHash[64], HashAlgorithm u8, Name AMT_ANSI_STRING.
const hashEntryFixed = 4 + 4 + 64 + 1

func decodeCertHashEntry(p []byte) (CertHashEntry, error) {
	const c = CmdGetCertificateHashEntry
	if len(p) < hashEntryFixed {
		return CertHashEntry{}, frameErr(c, "%d payload bytes, shorter than the fixed part (%d)", len(p), hashEntryFixed)
	}
	alg := HashAlgorithm(p[72])
	if alg.Size() == 0 {
		return CertHashEntry{}, frameErr(c, "hash algorithm %d, want 1 (SHA1), 2 (SHA256) or 3 (SHA384)", p[72])
	}
	name, err := ansiString(c, p[hashEntryFixed:], "name")
	if err != nil {
		return CertHashEntry{}, err
	}
	return CertHashEntry{
		Name:      name,
		Algorithm: alg,
		Hash:      bytes.Clone(p[8 : 8+alg.Size()]),
		Default:   binary.LittleEndian.Uint32(p[0:]) != 0,
		Active:    binary.LittleEndian.Uint32(p[4:]) != 0,
	}, nil
}

// GetCertificateHashEntry reads one hash table entry.
func (c *Client) GetCertificateHashEntry(r GetCertificateHashEntryRequest) (CertHashEntry, error) {
	p, err := c.call(CmdGetCertificateHashEntry, r.marshal())
	if err != nil {
		return CertHashEntry{}, fmt.Errorf("handle %d: %w", r.Handle, err)
	}
	e, err := decodeCertHashEntry(p)
	if err != nil {
		return CertHashEntry{}, fmt.Errorf("handle %d: %w", r.Handle, err)
	}
	return e, nil
}

// CertificateHashes reads the whole table, in handle order.
func (c *Client) CertificateHashes() ([]CertHashEntry, error) {
	handles, err := c.EnumerateHashHandles()
	if err != nil {
		return nil, err
	}
	out := make([]CertHashEntry, 0, len(handles))
	for _, h := range handles {
		e, err := c.GetCertificateHashEntry(GetCertificateHashEntryRequest{Handle: h})
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// ---- GetLocalSystemAccount (0x04000067) ----

// LocalSystemAccount is the $$OsAdmin credential for LMS. Its password
// must stay on the host: String and LogValue leave it out.
type LocalSystemAccount struct {
	User     string
	Password string
}

func (a LocalSystemAccount) String() string { return a.User + ":<redacted>" }

// GoString keeps %#v from printing the password.
func (a LocalSystemAccount) GoString() string { return a.String() }

// LogValue keeps slog from printing the password.
func (a LocalSystemAccount) LogValue() slog.Value { return slog.StringValue(a.String()) }

// GetLocalSystemAccountRequest carries 40 reserved zero bytes (LMS
// GetLocalSystemAccountCommand.h requestDataSize, rpc-go Reserved[40]).
type GetLocalSystemAccountRequest struct{}

func (GetLocalSystemAccountRequest) marshal() []byte { return make([]byte, 40) }

// Layout: user char[33] + password char[33] (CFG_MAX_ACL_USER/PWD_LENGTH,
// LMS and rpc-go), NUL-terminated; firmware pads to 68 bytes, which
// MeshCentral's getLocalSystemAccount requires exactly. LMS reads the
// 66 and ignores the rest, so 66 and 68 are accepted.
const aclFieldLen = 33

func decodeLocalSystemAccount(p []byte) (LocalSystemAccount, error) {
	const c = CmdGetLocalSystemAccount
	if len(p) != 2*aclFieldLen && len(p) != 2*aclFieldLen+2 {
		return LocalSystemAccount{}, frameErr(c, "%d payload bytes, want 66 or 68", len(p))
	}
	a := LocalSystemAccount{User: cString(p[:aclFieldLen]), Password: cString(p[aclFieldLen : 2*aclFieldLen])}
	if a.User == "" || a.Password == "" {
		return LocalSystemAccount{}, frameErr(c, "empty user or password")
	}
	return a, nil
}

// GetLocalSystemAccount reads the $$OsAdmin credential.
func (c *Client) GetLocalSystemAccount() (LocalSystemAccount, error) {
	p, err := c.call(CmdGetLocalSystemAccount, GetLocalSystemAccountRequest{}.marshal())
	if err != nil {
		return LocalSystemAccount{}, err
	}
	return decodeLocalSystemAccount(p)
}

// ---- SetProvisioningServerOTP (0x0400002A) ----

// OTP length bounds: LMS SetProvisioningServerOTPCommand.h
// MIN_OTP_BUFFER_LENGTH 8, MAX_OTP_BUFFER_LENGTH 32.
const (
	MinOTPLength = 8
	MaxOTPLength = 32
)

// SetProvisioningServerOTPRequest carries the OTP as an AMT_ANSI_STRING
// without terminator (LMS AmtAnsiString serialize, amt-protocol.md §3.7).
type SetProvisioningServerOTPRequest struct {
	OTP string
}

// ValidOTP checks the firmware's rule: 8..32 printable ASCII characters.
// The error never contains the OTP.
func ValidOTP(otp string) error {
	if len(otp) < MinOTPLength || len(otp) > MaxOTPLength {
		return fmt.Errorf("one-time password is %d characters, want %d..%d", len(otp), MinOTPLength, MaxOTPLength)
	}
	for i := 0; i < len(otp); i++ {
		if otp[i] < 0x21 || otp[i] > 0x7e {
			return fmt.Errorf("one-time password character %d is not printable ASCII", i+1)
		}
	}
	return nil
}

func (r SetProvisioningServerOTPRequest) marshal() ([]byte, error) {
	if err := ValidOTP(r.OTP); err != nil {
		return nil, err
	}
	b := binary.LittleEndian.AppendUint16(nil, uint16(len(r.OTP)))
	return append(b, r.OTP...), nil
}

// SetProvisioningServerOTP hands the firmware the OTP it will report to
// the setup server (AMT_SetupAndConfigurationService ProvisioningServerOTP).
func (c *Client) SetProvisioningServerOTP(r SetProvisioningServerOTPRequest) error {
	b, err := r.marshal()
	if err != nil {
		return fmt.Errorf("pthi %s: %w", CmdSetProvisioningServerOTP, err)
	}
	p, err := c.call(CmdSetProvisioningServerOTP, b)
	if err != nil {
		return err
	}
	return exact(CmdSetProvisioningServerOTP, p, 0)
}

// ---- StartConfiguration (0x04000029), StopConfiguration (0x0400005E) ----

// StartConfiguration opens the remote-configuration window: the device
// enters in-provisioning and sends hellos (MeshCentral amt-mei.js
// startConfiguration: no payload, status only).
func (c *Client) StartConfiguration() error {
	p, err := c.call(CmdStartConfiguration, nil)
	if err != nil {
		return err
	}
	return exact(CmdStartConfiguration, p, 0)
}

// StopConfiguration closes the window, back to pre-provisioning (LMS
// StopConfigurationCommand.h: no payload, status only).
func (c *Client) StopConfiguration() error {
	p, err := c.call(CmdStopConfiguration, nil)
	if err != nil {
		return err
	}
	return exact(CmdStopConfiguration, p, 0)
}

// ---- GetLANInterfaceSettings (0x04000048) ----

// GetLANInterfaceSettingsRequest selects interface 0 (wired) or 1
// (wireless) — LMS INTERFACE_SETTINGS.
type GetLANInterfaceSettingsRequest struct {
	Index uint32
}

func (r GetLANInterfaceSettingsRequest) marshal() []byte {
	return binary.LittleEndian.AppendUint32(nil, r.Index)
}

// LANInterfaceSettings is one interface's firmware view.
type LANInterfaceSettings struct {
	Enabled     bool
	IPv4        netip.Addr
	DHCPEnabled bool
	DHCPMode    uint8 // 1 active, 2 passive (MeshCentral)
	LinkUp      bool
	MAC         net.HardwareAddr
}

// Layout (LMS GetLanInterfaceSettingsCommand.h LAN_SETTINGS, rpc-go
// GetLANInterfaceSettingsResponse): Enabled u32, Ipv4Address u32,
// DhcpEnabled u32, DhcpIpMode u8, LinkStatus u8, MacAddress[6] — 20 bytes.
// The address is a u32 whose value 0x01020304 means 1.2.3.4 (LMS
// CFG_IPv4_ADDRESS comment; rpc-go and MeshCentral shift it that way).
func decodeLANInterfaceSettings(p []byte) (LANInterfaceSettings, error) {
	if err := exact(CmdGetLANInterfaceSettings, p, 20); err != nil {
		return LANInterfaceSettings{}, err
	}
	var ip [4]byte
	binary.BigEndian.PutUint32(ip[:], binary.LittleEndian.Uint32(p[4:]))
	return LANInterfaceSettings{
		Enabled:     binary.LittleEndian.Uint32(p[0:]) != 0,
		IPv4:        netip.AddrFrom4(ip),
		DHCPEnabled: binary.LittleEndian.Uint32(p[8:]) != 0,
		DHCPMode:    p[12],
		LinkUp:      p[13] == 1,
		MAC:         net.HardwareAddr(bytes.Clone(p[14:20])),
	}, nil
}

// GetLANInterfaceSettings reads one interface's settings.
func (c *Client) GetLANInterfaceSettings(r GetLANInterfaceSettingsRequest) (LANInterfaceSettings, error) {
	p, err := c.call(CmdGetLANInterfaceSettings, r.marshal())
	if err != nil {
		return LANInterfaceSettings{}, err
	}
	return decodeLANInterfaceSettings(p)
}

// ---- Unprovision (0x04000010) ----

// UnprovisionRequest carries CFG_PROVISIONING_MODE (LMS); firmware ignores
// it (amt-protocol.md §7.1) and only client control mode may unprovision
// over the host interface.
type UnprovisionRequest struct {
	Mode uint32
}

func (r UnprovisionRequest) marshal() []byte {
	return binary.LittleEndian.AppendUint32(nil, r.Mode)
}

// Unprovision returns the device to pre-provisioning (CCM only). The
// response is the status alone (LMS UnprovisionCommand.h) or status and a
// u32 state (rpc-go UnprovisionResponse); both are accepted.
func (c *Client) Unprovision(r UnprovisionRequest) error {
	p, err := c.call(CmdUnprovision, r.marshal())
	if err != nil {
		return err
	}
	if len(p) != 0 && len(p) != 4 {
		return frameErr(CmdUnprovision, "%d payload bytes, want 0 or 4", len(p))
	}
	return nil
}
