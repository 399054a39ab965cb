// Package agenttest holds the far ends the agent's tests talk to at their
// true boundaries: a PTHI firmware on a Unix socket, an LMS with digest
// authentication, and a branchbox agent listener that checks the channel
// binding and drives a relay. They are written from the same sources as
// the agent but share none of its code, so a layout mistake on one side
// shows up as a failure. amtsim (tests/amtsim) is the full simulator; the
// lead's end-to-end tests run the agent against it. Test support only, as
// net/http/httptest is: the agent binary does not link it.
package agenttest

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// PTHI status codes used here (Intel LMS StatusCodeDefinitions.h).
const (
	StatusSuccess              = 0x0
	StatusInvalidPTMode        = 0x3
	StatusInvalidMessageLength = 0x4
	StatusNotPermitted         = 0x10
	StatusInvalidParameter     = 0x24
	StatusInvalidCommand       = 0x803
	StatusInvalidHandle        = 0x805
)

// HashEntry is one row of the fake's root hash table.
type HashEntry struct {
	Name    string
	Alg     uint8 // 1 SHA-1, 2 SHA-256, 3 SHA-384
	Sum     []byte
	Active  bool
	Default bool
}

// PTHI is a fake AMT host interface. Set fields before Serve; read them
// with Lock/Unlock (or Snapshot) afterwards.
type PTHI struct {
	sync.Mutex
	UUID       string // canonical 8-4-4-4-12
	AMTVersion string
	Build      string
	SKU        string
	State      uint32 // 0 pre, 1 in, 2 post
	Mode       uint32 // 0 none, 1 CCM, 2 ACM
	Suffix     string
	Hashes     []HashEntry
	MAC        net.HardwareAddr
	IP         netip.Addr
	User       string
	Password   string

	OTP  string   // last SetProvisioningServerOTP
	Seen []uint32 // commands in arrival order
	// Raw answers a command with these bytes (header included) instead
	// of the fake's own response, to feed the client malformed messages.
	Raw map[uint32][]byte
}

// NewPTHI is a pre-provisioning device with two hashes (one inactive).
func NewPTHI() *PTHI {
	s256, _ := hex.DecodeString("b55d12476549b20a39e27bac39c0841b21f448de861f8a4d570dc0d04bb53242")
	s1, _ := hex.DecodeString("f7f776e487dad460bc8dc1c64ed71d9c078fcb00")
	return &PTHI{
		UUID:       "12345678-9abc-def0-1122-334455667788",
		AMTVersion: "16.1.25", Build: "2049", SKU: "16392",
		Suffix: "branch.example.com",
		Hashes: []HashEntry{
			{Name: "Example Root 1", Alg: 2, Sum: s256, Active: true, Default: true},
			{Name: "Example Root 2", Alg: 1, Sum: s1, Active: false, Default: false},
		},
		MAC:      net.HardwareAddr{0x02, 0x42, 0xac, 0x11, 0x00, 0x05},
		IP:       netip.MustParseAddr("10.1.0.5"),
		User:     "$$OsAdmin",
		Password: "Lms-Local-Pw-7f3a9c2e",
	}
}

// Serve listens on a Unix socket until the test ends and returns its path.
func (d *PTHI) Serve(t testing.TB) string {
	t.Helper()
	path := ShortSocketPath(t, "pthi")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go d.serveConn(c)
		}
	}()
	return path
}

// ShortSocketPath is a fresh path short enough for sun_path (108 bytes),
// which t.TempDir's long names can exceed.
func ShortSocketPath(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bba")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, name)
}

func (d *PTHI) serveConn(c net.Conn) {
	defer c.Close()
	for {
		hdr := make([]byte, 12)
		if _, err := io.ReadFull(c, hdr); err != nil {
			return
		}
		n := binary.LittleEndian.Uint32(hdr[8:])
		if hdr[0] != 1 || hdr[1] != 1 || n > 4096-12 {
			return
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(c, payload); err != nil {
			return
		}
		cmd := binary.LittleEndian.Uint32(hdr[4:])
		if _, err := c.Write(d.answer(cmd, payload)); err != nil {
			return
		}
	}
}

func response(cmd, status uint32, data []byte) []byte {
	b := make([]byte, 16, 16+len(data))
	b[0], b[1] = 1, 1
	binary.LittleEndian.PutUint32(b[4:], cmd|0x00800000)
	binary.LittleEndian.PutUint32(b[8:], uint32(4+len(data)))
	binary.LittleEndian.PutUint32(b[12:], status)
	return append(b, data...)
}

func fixedString(s string, n int) []byte {
	b := make([]byte, n)
	copy(b, s)
	return b
}

func ansi(s string) []byte {
	return append(binary.LittleEndian.AppendUint16(nil, uint16(len(s))), s...)
}

func (d *PTHI) answer(cmd uint32, p []byte) []byte {
	d.Lock()
	defer d.Unlock()
	d.Seen = append(d.Seen, cmd)
	if raw, ok := d.Raw[cmd]; ok {
		return raw
	}
	st, data, err := d.dispatch(cmd, p)
	if errors.Is(err, errLength) {
		return response(cmd, StatusInvalidMessageLength, nil)
	}
	return response(cmd, st, data)
}

var errLength = errors.New("payload length")

func want(p []byte, n int) error {
	if len(p) != n {
		return errLength
	}
	return nil
}

func (d *PTHI) dispatch(cmd uint32, p []byte) (uint32, []byte, error) {
	switch cmd {
	case 0x0400001A: // GetCodeVersions
		if err := want(p, 0); err != nil {
			return 0, nil, err
		}
		b := fixedString("BIOS-1.2.3", 65)
		vers := [][2]string{{"Flash", d.AMTVersion}, {"AMT", d.AMTVersion}, {"Build Number", d.Build}, {"Sku", d.SKU}}
		b = binary.LittleEndian.AppendUint32(b, uint32(len(vers)))
		for _, v := range vers {
			for _, s := range v {
				b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
				b = append(b, fixedString(s, 20)...)
			}
		}
		return StatusSuccess, b, nil
	case 0x04000011: // GetProvisioningState
		return StatusSuccess, binary.LittleEndian.AppendUint32(nil, d.State), want(p, 0)
	case 0x0400006B: // GetControlMode
		return StatusSuccess, binary.LittleEndian.AppendUint32(nil, d.Mode), want(p, 0)
	case 0x0400005C: // GetUUID: wire order swaps the first three fields
		u, _ := hex.DecodeString(strings.ReplaceAll(d.UUID, "-", ""))
		w := []byte{u[3], u[2], u[1], u[0], u[5], u[4], u[7], u[6]}
		return StatusSuccess, append(w, u[8:]...), want(p, 0)
	case 0x04000036: // GetPkiFqdnSuffix
		return StatusSuccess, ansi(d.Suffix), want(p, 0)
	case 0x0400002C: // EnumerateHashHandles
		b := binary.LittleEndian.AppendUint32(nil, uint32(len(d.Hashes)))
		for i := range d.Hashes {
			b = binary.LittleEndian.AppendUint32(b, uint32(100+i))
		}
		return StatusSuccess, b, want(p, 0)
	case 0x0400002D: // GetCertificateHashEntry
		if err := want(p, 4); err != nil {
			return 0, nil, err
		}
		i := int(binary.LittleEndian.Uint32(p)) - 100
		if i < 0 || i >= len(d.Hashes) {
			return StatusInvalidHandle, nil, nil
		}
		h := d.Hashes[i]
		b := binary.LittleEndian.AppendUint32(nil, boolU32(h.Default))
		b = binary.LittleEndian.AppendUint32(b, boolU32(h.Active))
		b = append(b, fixedString(string(h.Sum), 64)...)
		b = append(b, h.Alg)
		return StatusSuccess, append(b, ansi(h.Name)...), nil
	case 0x04000067: // GetLocalSystemAccount: 40 reserved bytes in, 33+33+2 out
		if err := want(p, 40); err != nil {
			return 0, nil, err
		}
		return StatusSuccess, append(append(fixedString(d.User, 33), fixedString(d.Password, 33)...), 0, 0), nil
	case 0x04000048: // GetLANInterfaceSettings
		if err := want(p, 4); err != nil {
			return 0, nil, err
		}
		if binary.LittleEndian.Uint32(p) != 0 {
			return StatusInvalidParameter, nil, nil
		}
		b := binary.LittleEndian.AppendUint32(nil, 1)
		ip := d.IP.As4()
		b = binary.LittleEndian.AppendUint32(b, binary.BigEndian.Uint32(ip[:]))
		b = binary.LittleEndian.AppendUint32(b, 1)
		b = append(b, 1, 1)
		return StatusSuccess, append(b, d.MAC...), nil
	case 0x0400002A: // SetProvisioningServerOTP
		if len(p) < 2 || len(p) != 2+int(binary.LittleEndian.Uint16(p)) {
			return 0, nil, errLength
		}
		if d.State == 2 {
			return StatusNotPermitted, nil, nil
		}
		if n := len(p) - 2; n < 8 || n > 32 {
			return StatusInvalidParameter, nil, nil
		}
		d.OTP = string(p[2:])
		return StatusSuccess, nil, nil
	case 0x04000029: // StartConfiguration
		if err := want(p, 0); err != nil {
			return 0, nil, err
		}
		if d.State == 2 {
			return StatusInvalidPTMode, nil, nil
		}
		d.State = 1
		return StatusSuccess, nil, nil
	case 0x0400005E: // StopConfiguration
		if err := want(p, 0); err != nil {
			return 0, nil, err
		}
		if d.State != 1 {
			return StatusInvalidPTMode, nil, nil
		}
		d.State = 0
		return StatusSuccess, nil, nil
	case 0x04000010: // Unprovision
		if err := want(p, 4); err != nil {
			return 0, nil, err
		}
		if d.Mode != 1 {
			return StatusInvalidPTMode, nil, nil
		}
		d.State, d.Mode = 0, 0
		return StatusSuccess, nil, nil
	}
	return StatusInvalidCommand, nil, nil
}

func boolU32(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}
