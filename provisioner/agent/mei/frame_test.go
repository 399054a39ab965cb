package mei

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// resp builds a response message by hand: header, status, data.
func resp(cmd uint32, status uint32, data []byte) []byte {
	b := []byte{1, 1, 0, 0}
	b = binary.LittleEndian.AppendUint32(b, cmd)
	b = binary.LittleEndian.AppendUint32(b, uint32(4+len(data)))
	b = binary.LittleEndian.AppendUint32(b, status)
	return append(b, data...)
}

func TestEncodeRequest(t *testing.T) {
	got := encodeRequest(CmdGetCertificateHashEntry, GetCertificateHashEntryRequest{Handle: 7}.marshal())
	want, _ := hex.DecodeString("01010000" + "2d000004" + "04000000" + "07000000")
	if !bytes.Equal(got, want) {
		t.Fatalf("got %x want %x", got, want)
	}
	otp, err := SetProvisioningServerOTPRequest{OTP: "ABCDEFGH"}.marshal()
	if err != nil || !bytes.Equal(otp, append([]byte{8, 0}, "ABCDEFGH"...)) {
		t.Fatalf("otp payload %x, %v", otp, err)
	}
	if n := len(GetLocalSystemAccountRequest{}.marshal()); n != 40 {
		t.Fatalf("GetLocalSystemAccount request payload %d bytes, want 40", n)
	}
}

func TestCheckResponse(t *testing.T) {
	const c = CmdGetControlMode
	ok := resp(uint32(c)|responseBit, 0, []byte{2, 0, 0, 0})
	mut := func(f func([]byte) []byte) []byte { return f(bytes.Clone(ok)) }
	tests := []struct {
		name   string
		msg    []byte
		want   string // "" = success
		status Status
	}{
		{"ok", ok, "", 0},
		{"short", ok[:15], "shorter than the 16-byte header", 0},
		{"empty", nil, "0 bytes", 0},
		{"major version", mut(func(b []byte) []byte { b[0] = 2; return b }), "header version 2.1", 0},
		{"minor version and reserved ignored", mut(func(b []byte) []byte { b[1], b[2] = 9, 9; return b }), "", 0},
		{"request code not echoed", mut(func(b []byte) []byte { b[6] = 0; return b }), "answers command 0x0400006B, want 0x0480006B", 0},
		{"other command", resp(uint32(CmdGetUUID)|responseBit, 0, []byte{2, 0, 0, 0}), "answers command 0x0480005C", 0},
		{"length too long", mut(func(b []byte) []byte { b[8] = 9; return b }), "header length 9 but 8 bytes follow", 0},
		{"length too short", mut(func(b []byte) []byte { b[8] = 4; return b }), "header length 4 but 8 bytes follow", 0},
		{"extra bytes read", append(bytes.Clone(ok), 0), "header length 8 but 9 bytes follow", 0},
		{"status", resp(uint32(c)|responseBit, 0x10, nil), "firmware status 0x10 AMT_STATUS_NOT_PERMITTED", StatusNotPermitted},
		{"unknown status", resp(uint32(c)|responseBit, 0x9999, nil), "firmware status 0x9999", 0x9999},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := checkResponse(c, tt.msg)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "GetControlMode") {
				t.Fatalf("err %v, want it to name GetControlMode and contain %q", err, tt.want)
			}
			var se *StatusError
			if tt.status != 0 && (!errors.As(err, &se) || se.Status != tt.status) {
				t.Fatalf("err %v is not StatusError %v", err, tt.status)
			}
		})
	}
}

func u16(n int) []byte { return binary.LittleEndian.AppendUint16(nil, uint16(n)) }
func u32(n int) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(n)) }
func pad(s string, n int) []byte {
	b := make([]byte, n)
	copy(b, s)
	return b
}

func versionEntry(d, v string) []byte {
	return bytes.Join([][]byte{u16(len(d)), pad(d, 20), u16(len(v)), pad(v, 20)}, nil)
}

func hashEntry(def, act int, sum []byte, alg byte, name string) []byte {
	return bytes.Join([][]byte{u32(def), u32(act), pad(string(sum), 64), {alg}, u16(len(name)), []byte(name)}, nil)
}

// TestDecoders pins each payload layout, accepted and refused.
func TestDecoders(t *testing.T) {
	bios := pad("BIOS", 65)
	two := append(append(append(bytes.Clone(bios), u32(2)...), versionEntry("AMT", "16.1.25")...), versionEntry("Sku", "16392")...)
	full := append(bytes.Clone(two), make([]byte, 48*versionEntryLen)...)
	sum := bytes.Repeat([]byte{0xab}, 32)
	tests := []struct {
		name string
		dec  func([]byte) (any, error)
		in   []byte
		want string // fmt of the value, or "error: substring"
	}{
		{"versions count entries", codeVersions, two, "BIOS [{AMT 16.1.25} {Sku 16392}]"},
		{"versions full array", codeVersions, full, "BIOS [{AMT 16.1.25} {Sku 16392}]"},
		{"versions NUL counted in length", codeVersions, append(append(bytes.Clone(bios), u32(1)...),
			bytes.Join([][]byte{u16(4), pad("AMT", 20), u16(8), pad("16.1.25", 20)}, nil)...), "BIOS [{AMT 16.1.25}]"},
		{"versions truncated", codeVersions, two[:len(two)-1], "error: 87 bytes of entries for count 2, want 88 or 2200"},
		{"versions too many", codeVersions, append(bytes.Clone(bios), u32(51)...), "error: 51 version entries"},
		{"versions string length", codeVersions, append(append(bytes.Clone(bios), u32(1)...),
			bytes.Join([][]byte{u16(21), pad("", 20), u16(0), pad("", 20)}, nil)...), "error: string length 21"},
		{"versions short", codeVersions, bios, "error: shorter than BIOS version and count"},
		{"state", provState, u32(1), "in-provisioning"},
		{"state out of range", provState, u32(3), "error: value 3 out of range"},
		{"state long", provState, u32(1)[:3], "error: 3 payload bytes"},
		{"mode", ctlMode, u32(2), "acm"},
		{"uuid", uuid, []byte{0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88},
			"12345678-9abc-def0-1122-334455667788"},
		{"uuid short", uuid, make([]byte, 15), "error: 15 payload bytes after the status, want 16"},
		{"suffix", suffix, append(u16(11), "example.com"...), "example.com"},
		{"suffix empty", suffix, u16(0), ""},
		{"suffix length past end", suffix, append(u16(12), "example.com"...), "error: suffix: length 12 but 11"},
		{"suffix trailing bytes", suffix, append(u16(3), "abcd"...), "error: suffix: length 3 but 4"},
		{"handles", handles, append(u32(2), append(u32(5), u32(6)...)...), "[5 6]"},
		{"handles fixed array", handles, append(append(u32(1), u32(9)...), make([]byte, 32*4)...), "[9]"},
		{"handles mismatch", handles, append(u32(2), u32(5)...), "error: 4 bytes of handles for count 2"},
		{"handles too many", handles, u32(34), "error: 34 handles"},
		{"hash entry", hashEnt, hashEntry(1, 0, sum, 2, "Root"), "{Root SHA256 " + hex.EncodeToString(sum) + " false true}"},
		{"hash entry sha384", hashEnt, hashEntry(0, 1, bytes.Repeat([]byte{1}, 48), 3, ""), "{ SHA384 " + strings.Repeat("01", 48) + " true false}"},
		{"hash entry bad algorithm", hashEnt, hashEntry(0, 1, sum, 4, "x"), "error: hash algorithm 4"},
		{"hash entry md5", hashEnt, hashEntry(0, 1, sum, 0, "x"), "error: hash algorithm 0"},
		{"hash entry name overrun", hashEnt, hashEntry(0, 1, sum, 2, "Root")[:76], "error: name: length 4 but 1"},
		{"hash entry short", hashEnt, make([]byte, 72), "error: shorter than the fixed part"},
		{"account 68", account, append(append(pad("$$OsAdmin", 33), pad("pw123456", 33)...), 0, 0), "$$OsAdmin:<redacted>"},
		{"account 66", account, append(pad("$$OsAdmin", 33), pad("pw123456", 33)...), "$$OsAdmin:<redacted>"},
		{"account 67", account, make([]byte, 67), "error: 67 payload bytes, want 66 or 68"},
		{"account empty password", account, pad("$$OsAdmin", 66), "error: empty user or password"},
		{"lan", lan, bytes.Join([][]byte{u32(1), u32(0x0a010005), u32(1), {1, 1}, {2, 0x42, 0xac, 0x11, 0, 5}}, nil),
			"{true 10.1.0.5 true 1 true 02:42:ac:11:00:05}"},
		{"lan short", lan, make([]byte, 19), "error: 19 payload bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := tt.dec(tt.in)
			if e, ok := strings.CutPrefix(tt.want, "error: "); ok {
				if err == nil || !strings.Contains(err.Error(), e) {
					t.Fatalf("got %v, %v; want error containing %q", v, err, e)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := sprint(v); got != tt.want {
				t.Fatalf("got %q want %q", got, tt.want)
			}
		})
	}
}

func sprint(v any) string {
	switch x := v.(type) {
	case CodeVersions:
		s := x.BIOS + " ["
		for i, e := range x.Versions {
			if i > 0 {
				s += " "
			}
			s += "{" + e.Description + " " + e.Version + "}"
		}
		return s + "]"
	case CertHashEntry:
		return "{" + x.Name + " " + strings.ToUpper(x.Algorithm.String()) + " " + hex.EncodeToString(x.Hash) + " " +
			boolStr(x.Active) + " " + boolStr(x.Default) + "}"
	case LANInterfaceSettings:
		return "{" + boolStr(x.Enabled) + " " + x.IPv4.String() + " " + boolStr(x.DHCPEnabled) + " " +
			string('0'+rune(x.DHCPMode)) + " " + boolStr(x.LinkUp) + " " + x.MAC.String() + "}"
	case []uint32:
		s := "["
		for i, h := range x {
			if i > 0 {
				s += " "
			}
			s += string(rune('0' + h))
		}
		return s + "]"
	case interface{ String() string }:
		return x.String()
	case string:
		return x
	}
	panic("unhandled")
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// Adapters so one table covers every decoder.
func codeVersions(p []byte) (any, error) { return decodeCodeVersions(p) }
func provState(p []byte) (any, error)    { return decodeProvisioningState(p) }
func ctlMode(p []byte) (any, error)      { return decodeControlMode(p) }
func uuid(p []byte) (any, error)         { return decodeUUID(p) }
func suffix(p []byte) (any, error)       { return decodePkiFqdnSuffix(p) }
func handles(p []byte) (any, error)      { return decodeHashHandles(p) }
func hashEnt(p []byte) (any, error)      { return decodeCertHashEntry(p) }
func account(p []byte) (any, error)      { return decodeLocalSystemAccount(p) }
func lan(p []byte) (any, error)          { return decodeLANInterfaceSettings(p) }

func TestValidOTP(t *testing.T) {
	for _, tt := range []struct {
		otp, want string
	}{
		{"ABCDEFGH", ""},
		{strings.Repeat("x", 32), ""},
		{"ABCDEFG", "7 characters, want 8..32"},
		{strings.Repeat("x", 33), "33 characters"},
		{"ABCD EFGH", "character 5 is not printable"},
		{"ABCDEFG\x00", "character 8"},
		{"ABCDEFGé", "not printable ASCII"},
	} {
		err := ValidOTP(tt.otp)
		if tt.want == "" {
			if err != nil {
				t.Errorf("%q: %v", tt.otp, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want %q", tt.otp, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), tt.otp) {
			t.Errorf("error %q contains the OTP", err)
		}
	}
}

// FuzzResponse feeds arbitrary messages to the framing check and every
// decoder: no panics, and an accepted message always satisfies the
// framing rules.
func FuzzResponse(f *testing.F) {
	f.Add(uint8(0), resp(uint32(CmdGetControlMode)|responseBit, 0, u32(1)))
	f.Add(uint8(1), resp(uint32(CmdGetCodeVersions)|responseBit, 0, append(pad("B", 65), u32(0)...)))
	f.Add(uint8(2), resp(uint32(CmdGetCertificateHashEntry)|responseBit, 0, hashEntry(1, 1, make([]byte, 32), 2, "n")))
	f.Add(uint8(3), resp(uint32(CmdEnumerateHashHandles)|responseBit, 0, append(u32(1), u32(1)...)))
	f.Add(uint8(4), resp(uint32(CmdGetPkiFqdnSuffix)|responseBit, 0, append(u16(1), 'a')))
	f.Add(uint8(5), resp(uint32(CmdGetLocalSystemAccount)|responseBit, 0, make([]byte, 68)))
	f.Add(uint8(6), resp(uint32(CmdGetLANInterfaceSettings)|responseBit, 0, make([]byte, 20)))
	f.Add(uint8(7), resp(uint32(CmdGetUUID)|responseBit, 0, make([]byte, 16)))
	type dec struct {
		c Command
		f func([]byte) (any, error)
	}
	decs := []dec{
		{CmdGetControlMode, ctlMode}, {CmdGetCodeVersions, codeVersions}, {CmdGetCertificateHashEntry, hashEnt},
		{CmdEnumerateHashHandles, handles}, {CmdGetPkiFqdnSuffix, suffix}, {CmdGetLocalSystemAccount, account},
		{CmdGetLANInterfaceSettings, lan}, {CmdGetUUID, uuid}, {CmdGetProvisioningState, provState},
	}
	f.Fuzz(func(t *testing.T, which uint8, msg []byte) {
		d := decs[int(which)%len(decs)]
		p, err := checkResponse(d.c, msg)
		if err != nil {
			return
		}
		if len(msg) < 16 || binary.LittleEndian.Uint32(msg[4:]) != uint32(d.c)|responseBit ||
			int(binary.LittleEndian.Uint32(msg[8:])) != len(msg)-12 || binary.LittleEndian.Uint32(msg[12:]) != 0 {
			t.Fatalf("accepted a message breaking the framing: %x", msg)
		}
		v, err := d.f(p)
		if err == nil {
			if e, ok := v.(CertHashEntry); ok && len(e.Hash) != e.Algorithm.Size() {
				t.Fatalf("hash of %d bytes for %s", len(e.Hash), e.Algorithm)
			}
			if cv, ok := v.(CodeVersions); ok && len(cv.Versions) > maxVersionEntries {
				t.Fatalf("%d versions", len(cv.Versions))
			}
		}
	})
}
