package mei

import (
	"encoding/binary"
	"fmt"

	"github.com/branchbox/branchbox/tests/amtsim/device"
)

// Request command codes (amt-protocol.md §7.1; rpc-go pkg/pthi/types.go,
// Intel's LMS PTHICommand.h).
const (
	CmdUnprovision              = 0x04000010
	CmdGetProvisioningState     = 0x04000011
	CmdGetCodeVersions          = 0x0400001A
	CmdStartConfiguration       = 0x04000029
	CmdSetProvisioningServerOTP = 0x0400002A
	CmdEnumerateHashHandles     = 0x0400002C
	CmdGetCertificateHashEntry  = 0x0400002D
	CmdGetPkiFqdnSuffix         = 0x04000036
	CmdGetLANInterfaceSettings  = 0x04000048
	CmdGetUUID                  = 0x0400005C
	CmdStopConfiguration        = 0x0400005E
	CmdGetLocalSystemAccount    = 0x04000067
	CmdGetControlMode           = 0x0400006B
)

// Field sizes of the response structures.
const (
	biosVersionLen   = 65 // BIOS_VERSION_LEN
	unicodeStringLen = 20 // UNICODE_STRING_LEN of AMT_UNICODE_STRING
	certHashMaxLen   = 64 // CERT_HASH_MAX_LENGTH
	hashNameMaxLen   = 32 // AMT_ANSI_STRING name of a hash entry (amt-protocol.md §4.2)
	accountFieldLen  = 33 // CFG_MAX_ACL_USER_LENGTH, CFG_MAX_ACL_PWD_LENGTH
	// MeshCentral's agent (amt-mei.js getLocalSystemAccount) accepts the
	// answer only when 68 bytes follow the status: the two 33-byte fields
	// and two bytes of padding, as firmware sends them.
	localAccountPayload = 68
)

// BIOSVersion is what the simulated platform reports as its BIOS version.
const BIOSVersion = "AMTSIM.86A.0001"

// command is one host-interface command: its name for logs, the payload
// length it takes (-1: checked by the handler) and its handler, which
// returns a PT_STATUS and, on success, the data after the status.
type command struct {
	name   string
	reqLen int
	handle func(dev *device.Device, payload []byte) (uint32, []byte)
}

var commands = map[uint32]command{
	CmdGetCodeVersions:          {"GetCodeVersions", 0, getCodeVersions},
	CmdGetProvisioningState:     {"GetProvisioningState", 0, getProvisioningState},
	CmdGetControlMode:           {"GetControlMode", 0, getControlMode},
	CmdGetUUID:                  {"GetUUID", 0, getUUID},
	CmdGetPkiFqdnSuffix:         {"GetPkiFqdnSuffix", 0, getPkiFqdnSuffix},
	CmdEnumerateHashHandles:     {"EnumerateHashHandles", 0, enumerateHashHandles},
	CmdGetCertificateHashEntry:  {"GetCertificateHashEntry", 4, getCertificateHashEntry},
	CmdGetLocalSystemAccount:    {"GetLocalSystemAccount", 40, getLocalSystemAccount},
	CmdSetProvisioningServerOTP: {"SetProvisioningServerOTP", -1, setProvisioningServerOTP},
	CmdStartConfiguration:       {"StartConfiguration", 0, status(func(d *device.Device) int { return d.StartConfiguration() })},
	CmdStopConfiguration:        {"StopConfiguration", 0, status(func(d *device.Device) int { return d.StopConfiguration() })},
	CmdGetLANInterfaceSettings:  {"GetLANInterfaceSettings", 4, getLANInterfaceSettings},
	// The mode is ignored by the firmware (cfgunprovision.htm).
	CmdUnprovision: {"Unprovision", 4, status(func(d *device.Device) int { return d.UnprovisionFromHost() })},
}

// CommandName names a request command for logs.
func CommandName(cmd uint32) string {
	if c, ok := commands[cmd]; ok {
		return c.name
	}
	return fmt.Sprintf("unknown(0x%08x)", cmd)
}

// Handle answers one well-framed request. Unknown commands get
// PT_STATUS_INVALID_COMMAND and a payload length the command does not take
// PT_STATUS_INVALID_MESSAGE_LENGTH; neither ends the connection.
func Handle(dev *device.Device, req Request) []byte {
	st, data := dispatch(dev, req)
	if st != device.PTSuccess {
		data = nil
	}
	return EncodeResponse(req.Header.Command, st, data)
}

func dispatch(dev *device.Device, req Request) (uint32, []byte) {
	c, ok := commands[req.Header.Command]
	if !ok {
		return device.PTInvalidCommand, nil
	}
	if c.reqLen >= 0 && len(req.Payload) != c.reqLen {
		return device.PTInvalidMessageLength, nil
	}
	return c.handle(dev, req.Payload)
}

func status(op func(*device.Device) int) func(*device.Device, []byte) (uint32, []byte) {
	return func(d *device.Device, _ []byte) (uint32, []byte) { return uint32(op(d)), nil }
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

// putFixed copies s into a zero-filled field of n bytes.
func putFixed(b []byte, s string, n int) []byte {
	f := make([]byte, n)
	copy(f, s)
	return append(b, f...)
}

// ansi appends an AMT_ANSI_STRING as it travels: u16 LE length, then the
// characters without terminator.
func ansi(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// unicodeString appends an AMT_UNICODE_STRING: u16 LE length and a 20-byte
// buffer. Intel's LMS (_verifyCodeVersions) demands a NUL right after a
// version's characters, so values keep a terminator inside the buffer.
func unicodeString(b []byte, s string, maxLen int) []byte {
	if len(s) > maxLen {
		s = s[:maxLen]
	}
	b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
	return putFixed(b, s, unicodeStringLen)
}

// getCodeVersions: BiosVersion[65], VersionsCount u32, then VersionsCount
// AMT_VERSION_TYPE entries {Description, Version} — only as many as the
// count says (Intel's LMS checks Length against the count).
func getCodeVersions(dev *device.Device, _ []byte) (uint32, []byte) {
	versions := dev.Profile().CodeVersions()
	b := putFixed(nil, BIOSVersion, biosVersionLen)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(versions)))
	for _, v := range versions {
		b = unicodeString(b, v.Name, unicodeStringLen)
		b = unicodeString(b, v.Value, unicodeStringLen-1)
	}
	return device.PTSuccess, b
}

func getProvisioningState(dev *device.Device, _ []byte) (uint32, []byte) {
	st, _ := dev.State()
	return device.PTSuccess, u32(uint32(st))
}

func getControlMode(dev *device.Device, _ []byte) (uint32, []byte) {
	_, mode := dev.State()
	return device.PTSuccess, u32(uint32(mode))
}

// getUUID answers the 16 bytes in the hello's byte order (first three
// fields little-endian), which rpc-go's GetUUID formatting expects.
func getUUID(dev *device.Device, _ []byte) (uint32, []byte) {
	w := dev.UUID().Wire()
	return device.PTSuccess, w[:]
}

func getPkiFqdnSuffix(dev *device.Device, _ []byte) (uint32, []byte) {
	return device.PTSuccess, ansi(nil, dev.TrustedSuffix())
}

// Hash handles are the table positions; a handle the table no longer has
// (a custom entry erased by unprovision) is AMT_STATUS_INVALID_HANDLE.
func enumerateHashHandles(dev *device.Device, _ []byte) (uint32, []byte) {
	n := len(dev.HashEntries())
	b := binary.LittleEndian.AppendUint32(nil, uint32(n))
	for i := range n {
		b = binary.LittleEndian.AppendUint32(b, uint32(i))
	}
	return device.PTSuccess, b
}

func boolU32(b []byte, v bool) []byte {
	if v {
		return binary.LittleEndian.AppendUint32(b, 1)
	}
	return binary.LittleEndian.AppendUint32(b, 0)
}

// getCertificateHashEntry: IsDefault u32, IsActive u32, CertificateHash[64]
// (the digest, zero-padded), HashAlgorithm u8 (1 SHA-1, 2 SHA-256, 3
// SHA-384), Name AMT_ANSI_STRING (MeshCentral amt-mei.js reads the
// algorithm at offset 72 and the name length at 73).
func getCertificateHashEntry(dev *device.Device, p []byte) (uint32, []byte) {
	handle := binary.LittleEndian.Uint32(p)
	entries := dev.HashEntries()
	if handle >= uint32(len(entries)) {
		return device.PTInvalidHandle, nil
	}
	e := entries[handle]
	b := boolU32(nil, e.Default)
	b = boolU32(b, e.Active)
	b = putFixed(b, string(e.Sum), certHashMaxLen)
	b = append(b, byte(e.Alg))
	name := e.Name
	if len(name) > hashNameMaxLen {
		name = name[:hashNameMaxLen]
	}
	return device.PTSuccess, ansi(b, name)
}

// getLocalSystemAccount: UserName[33], Password[33], NUL-terminated, then
// two bytes of padding.
func getLocalSystemAccount(dev *device.Device, _ []byte) (uint32, []byte) {
	user, pw := dev.LocalSystemAccount()
	b := putFixed(nil, user, accountFieldLen)
	b = putFixed(b, pw, accountFieldLen)
	return device.PTSuccess, append(b, make([]byte, localAccountPayload-len(b))...)
}

// setProvisioningServerOTP takes an AMT_ANSI_STRING whose length must
// account for the whole payload (AMT_STATUS_INVALID_MESSAGE_LENGTH: "Length
// field of the OTP or Length field of header is invalid").
func setProvisioningServerOTP(dev *device.Device, p []byte) (uint32, []byte) {
	if len(p) < 2 || int(binary.LittleEndian.Uint16(p))+2 != len(p) {
		return device.PTInvalidMessageLength, nil
	}
	return uint32(dev.SetProvisioningServerOTP(string(p[2:]))), nil
}

// getLANInterfaceSettings: Enabled u32, Ipv4Address u32, DhcpEnabled u32,
// DhcpIpMode u8, LinkStatus u8, MacAddress[6]. The address is the u32
// a<<24|b<<16|c<<8|d for a.b.c.d, sent little-endian (rpc-go and
// MeshCentral decode it that way).
func getLANInterfaceSettings(dev *device.Device, p []byte) (uint32, []byte) {
	s, st := dev.LANInterfaceSettings(binary.LittleEndian.Uint32(p))
	if st != device.PTSuccess {
		return uint32(st), nil
	}
	var addr uint32
	if ip := s.IPv4.To4(); ip != nil {
		addr = binary.BigEndian.Uint32(ip)
	}
	b := boolU32(nil, s.Enabled)
	b = binary.LittleEndian.AppendUint32(b, addr)
	b = boolU32(b, s.DHCP)
	link := byte(0)
	if s.LinkUp {
		link = 1
	}
	b = append(b, s.DHCPMode, link)
	return device.PTSuccess, putFixed(b, string(s.MAC), 6)
}
