package mei

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/branchbox/branchbox/tests/amtsim/device"
	"github.com/branchbox/branchbox/tests/amtsim/firmware"
	"github.com/branchbox/branchbox/tests/amtsim/hello"
)

const (
	testUUID     = "939b524b-13d4-1d18-e487-1c697a6b7a2b"
	testPassword = "Local-Pass-123"
)

// customSum is the custom root hash every test device trusts.
var customSum = firmware.Digest(hello.SHA256, []byte("amtsim mei test root"))

func newDevice(t testing.TB, mod func(*device.Config)) *device.Device {
	t.Helper()
	p, err := firmware.Lookup("16.1")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := hello.ParseUUID(testUUID)
	cfg := device.Config{
		UUID: u, Profile: p, DNSSuffix: "branch.example.com", LocalPassword: testPassword,
		MAC: net.HardwareAddr{0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}, IPv4: net.IPv4(192, 0, 2, 10),
		CustomHashes: []device.CustomHash{{Name: "Branch Root", Alg: hello.SHA256, Sum: customSum}},
		Log:          slog.New(slog.DiscardHandler),
	}
	if mod != nil {
		mod(&cfg)
	}
	d, err := device.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// answer runs one request and checks the response framing field by field;
// it returns the status and the data after it.
func answer(t *testing.T, dev *device.Device, in []byte) (uint32, []byte) {
	t.Helper()
	r, err := ReadRequest(bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	out := Handle(dev, r)
	if len(out) < 16 || out[0] != 1 || out[1] != 1 || out[2] != 0 || out[3] != 0 {
		t.Fatalf("response header % x", out)
	}
	if cmd := binary.LittleEndian.Uint32(out[4:8]); cmd != r.Header.Command|0x00800000 {
		t.Fatalf("response command 0x%08x to 0x%08x", cmd, r.Header.Command)
	}
	if n := binary.LittleEndian.Uint32(out[8:12]); int(n) != len(out)-12 {
		t.Fatalf("length field %d, %d bytes follow the header", n, len(out)-12)
	}
	st := binary.LittleEndian.Uint32(out[12:16])
	if st != device.PTSuccess && len(out) != 16 {
		t.Fatalf("status %d with %d data bytes", st, len(out)-16)
	}
	return st, out[16:]
}

func u32le(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func otpPayload(otp string) []byte {
	return append(binary.LittleEndian.AppendUint16(nil, uint16(len(otp))), otp...)
}

// cString reads a NUL-terminated string from a fixed field.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

func TestCommands(t *testing.T) {
	tests := []struct {
		name   string
		prep   func(d *device.Device)
		in     []byte
		status uint32
		check  func(t *testing.T, d *device.Device, data []byte)
	}{
		{"GetProvisioningState", nil, req(CmdGetProvisioningState, nil), 0, func(t *testing.T, _ *device.Device, b []byte) {
			if !bytes.Equal(b, []byte{0, 0, 0, 0}) {
				t.Fatalf("% x", b)
			}
		}},
		{"GetControlMode after CCM setup", func(d *device.Device) {
			d.Setup(2, hex.EncodeToString(make([]byte, 16)))
		}, req(CmdGetControlMode, nil), 0, func(t *testing.T, _ *device.Device, b []byte) {
			if !bytes.Equal(b, []byte{1, 0, 0, 0}) {
				t.Fatalf("% x", b)
			}
		}},
		{"GetUUID in the hello's byte order", nil, req(CmdGetUUID, nil), 0, func(t *testing.T, _ *device.Device, b []byte) {
			// amt-protocol.md §2.3: wire 4b529b93 d413 181d e487 1c697a6b7a2b.
			if hex.EncodeToString(b) != "4b529b93d413181de4871c697a6b7a2b" {
				t.Fatalf("% x", b)
			}
		}},
		{"GetCodeVersions", nil, req(CmdGetCodeVersions, nil), 0, func(t *testing.T, _ *device.Device, b []byte) {
			if cString(b[:65]) != BIOSVersion {
				t.Fatalf("BIOS %q", b[:65])
			}
			n := int(binary.LittleEndian.Uint32(b[65:69]))
			if len(b) != 69+44*n {
				t.Fatalf("%d entries in %d bytes", n, len(b))
			}
			got := map[string]string{}
			for i := range n {
				e := b[69+44*i:]
				dl, vl := binary.LittleEndian.Uint16(e[0:2]), binary.LittleEndian.Uint16(e[22:24])
				if dl > 20 || vl > 19 || e[24+vl] != 0 {
					t.Fatalf("entry %d: lengths %d/%d", i, dl, vl)
				}
				got[string(e[2:2+dl])] = string(e[24 : 24+vl])
			}
			if got["AMT"] != "16.1.27" || got["Build Number"] != "2176" || got["Sku"] != "16392" || len(got) != n {
				t.Fatalf("%v", got)
			}
		}},
		{"GetPkiFqdnSuffix", nil, req(CmdGetPkiFqdnSuffix, nil), 0, func(t *testing.T, _ *device.Device, b []byte) {
			if n := binary.LittleEndian.Uint16(b); int(n) != len(b)-2 || string(b[2:]) != "branch.example.com" {
				t.Fatalf("% x", b)
			}
		}},
		{"EnumerateHashHandles", nil, req(CmdEnumerateHashHandles, nil), 0, func(t *testing.T, d *device.Device, b []byte) {
			n := binary.LittleEndian.Uint32(b)
			if n != 24 || len(b) != 4+4*24 || binary.LittleEndian.Uint32(b[4+4*23:]) != 23 {
				t.Fatalf("%d handles in % x", n, b)
			}
		}},
		{"GetCertificateHashEntry custom", nil, req(CmdGetCertificateHashEntry, u32le(23)), 0, func(t *testing.T, _ *device.Device, b []byte) {
			if binary.LittleEndian.Uint32(b[0:4]) != 0 || binary.LittleEndian.Uint32(b[4:8]) != 1 {
				t.Fatalf("default/active % x", b[:8])
			}
			if !bytes.Equal(b[8:40], customSum) || !bytes.Equal(b[40:72], make([]byte, 32)) || b[72] != 2 {
				t.Fatalf("hash/algorithm % x", b[8:73])
			}
			if n := binary.LittleEndian.Uint16(b[73:75]); string(b[75:]) != "Branch Root" || int(n) != len(b)-75 {
				t.Fatalf("name % x", b[73:])
			}
		}},
		{"GetCertificateHashEntry default", nil, req(CmdGetCertificateHashEntry, u32le(0)), 0, func(t *testing.T, _ *device.Device, b []byte) {
			if binary.LittleEndian.Uint32(b[0:4]) != 1 || string(b[75:]) != "Go Daddy Class 2 CA" {
				t.Fatalf("% x", b)
			}
		}},
		{"GetCertificateHashEntry bad handle", nil, req(CmdGetCertificateHashEntry, u32le(24)), device.PTInvalidHandle, nil},
		{"GetLocalSystemAccount", nil, req(CmdGetLocalSystemAccount, make([]byte, 40)), 0, func(t *testing.T, _ *device.Device, b []byte) {
			if len(b) != 68 || cString(b[:33]) != "$$OsAdmin" || cString(b[33:66]) != testPassword {
				t.Fatalf("%d bytes: %q / %q", len(b), cString(b[:33]), cString(b[33:66]))
			}
		}},
		{"GetLocalSystemAccount without its reserved bytes", nil, req(CmdGetLocalSystemAccount, nil), device.PTInvalidMessageLength, nil},
		{"GetLANInterfaceSettings wired", nil, req(CmdGetLANInterfaceSettings, u32le(0)), 0, func(t *testing.T, _ *device.Device, b []byte) {
			want := "01000000" + "0a0200c0" + "00000000" + "00" + "01" + "02aabbccddee"
			if hex.EncodeToString(b) != want {
				t.Fatalf("%x\nwant %s", b, want)
			}
		}},
		{"GetLANInterfaceSettings wireless", nil, req(CmdGetLANInterfaceSettings, u32le(1)), device.PTInvalidParameter, nil},
		{"GetLANInterfaceSettings short", nil, req(CmdGetLANInterfaceSettings, []byte{0}), device.PTInvalidMessageLength, nil},
		{"SetProvisioningServerOTP", nil, req(CmdSetProvisioningServerOTP, otpPayload("Branch-OTP-1")), 0, func(t *testing.T, d *device.Device, b []byte) {
			if d.GetSetupService().OTPBase64 != "QnJhbmNoLU9UUC0x" {
				t.Fatalf("OTP not stored: %q", d.GetSetupService().OTPBase64)
			}
		}},
		{"SetProvisioningServerOTP length field too long", nil, req(CmdSetProvisioningServerOTP, otpPayload("Branch-OTP-1")[:10]), device.PTInvalidMessageLength, nil},
		{"SetProvisioningServerOTP trailing bytes", nil, req(CmdSetProvisioningServerOTP, append(otpPayload("Branch-OTP-1"), 0)), device.PTInvalidMessageLength, nil},
		{"SetProvisioningServerOTP empty payload", nil, req(CmdSetProvisioningServerOTP, nil), device.PTInvalidMessageLength, nil},
		{"SetProvisioningServerOTP too short", nil, req(CmdSetProvisioningServerOTP, otpPayload("short")), device.PTInvalidParameter, nil},
		{"SetProvisioningServerOTP in setup mode", func(d *device.Device) { d.StartConfiguration() },
			req(CmdSetProvisioningServerOTP, otpPayload("Branch-OTP-1")), device.PTInvalidPTMode, nil},
		{"StartConfiguration", nil, req(CmdStartConfiguration, nil), 0, func(t *testing.T, d *device.Device, _ []byte) {
			if st, _ := d.State(); st != device.InProvisioning || !d.WindowOpen() {
				t.Fatalf("state %s", st)
			}
		}},
		{"StartConfiguration with a payload", nil, req(CmdStartConfiguration, []byte{0}), device.PTInvalidMessageLength, nil},
		{"StopConfiguration while pre-provisioning", nil, req(CmdStopConfiguration, nil), device.PTInvalidPTMode, nil},
		{"StopConfiguration", func(d *device.Device) { d.StartConfiguration() }, req(CmdStopConfiguration, nil), 0, func(t *testing.T, d *device.Device, _ []byte) {
			if st, _ := d.State(); st != device.PreProvisioning || d.WindowOpen() {
				t.Fatalf("state %s", st)
			}
		}},
		{"Unprovision while pre-provisioning", nil, req(CmdUnprovision, u32le(1)), device.PTInvalidPTMode, nil},
		{"Unprovision in CCM", func(d *device.Device) {
			d.Setup(2, hex.EncodeToString(make([]byte, 16)))
		}, req(CmdUnprovision, u32le(0)), 0, func(t *testing.T, d *device.Device, b []byte) {
			if st, mode := d.State(); st != device.PreProvisioning || mode != device.ModeNone || len(b) != 0 {
				t.Fatalf("%s/%s, % x", st, mode, b)
			}
		}},
		{"unknown command", nil, req(0x04000099, nil), device.PTInvalidCommand, nil},
		{"a response code as request", nil, req(CmdGetUUID|0x00800000, nil), device.PTInvalidCommand, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newDevice(t, nil)
			if tc.prep != nil {
				tc.prep(d)
			}
			st, data := answer(t, d, tc.in)
			if st != tc.status {
				t.Fatalf("status %d, want %d (%s)", st, tc.status, d.Status().LastError)
			}
			if tc.check != nil {
				tc.check(t, d, data)
			}
		})
	}
}

// Every profile's version strings fit the AMT_UNICODE_STRING fields without
// being cut.
func TestCodeVersionsFit(t *testing.T) {
	for major, p := range firmware.Profiles {
		for _, v := range p.CodeVersions() {
			if len(v.Name) > unicodeStringLen || len(v.Value) > unicodeStringLen-1 {
				t.Errorf("AMT %d: %q = %q does not fit", major, v.Name, v.Value)
			}
		}
	}
}

// The hash table as MEI reports it matches the status endpoint entry for
// entry, so an agent's info and amtsim's status agree.
func TestHashEntriesMatchStatus(t *testing.T) {
	d := newDevice(t, func(c *device.Config) { c.Faults.HashInactive = true })
	st, b := answer(t, d, req(CmdEnumerateHashHandles, nil))
	if st != 0 {
		t.Fatal(st)
	}
	hashes := d.Status().Hashes
	if int(binary.LittleEndian.Uint32(b)) != len(hashes) {
		t.Fatalf("%d handles, %d status entries", binary.LittleEndian.Uint32(b), len(hashes))
	}
	algs := map[byte]string{1: "SHA1", 2: "SHA256", 3: "SHA384"}
	sizes := map[byte]int{1: 20, 2: 32, 3: 48}
	for i, h := range hashes {
		handle := binary.LittleEndian.Uint32(b[4+4*i:])
		st, e := answer(t, d, req(CmdGetCertificateHashEntry, u32le(handle)))
		if st != 0 {
			t.Fatal(st)
		}
		got := device.HashStatus{
			Name: string(e[75:]), Algorithm: algs[e[72]], Hash: hex.EncodeToString(e[8 : 8+sizes[e[72]]]),
			Active: e[4] == 1, Default: e[0] == 1,
		}
		if got != h {
			t.Fatalf("handle %d: MEI %+v, status %+v", handle, got, h)
		}
	}
	if last := hashes[len(hashes)-1]; last.Active || !strings.HasPrefix(last.Name, "Branch") {
		t.Fatalf("hash-inactive custom entry %+v", last)
	}
}
