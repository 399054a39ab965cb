package mei_test

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/branchbox/branchbox/provisioner/agent/agenttest"
	"github.com/branchbox/branchbox/provisioner/agent/mei"
)

func open(t *testing.T, d *agenttest.PTHI) *mei.Client {
	t.Helper()
	// Short: a truncated response waits for the deadline.
	c, err := mei.Open("unix:"+d.Serve(t), 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestCommandsOverSocket runs every command against the fake firmware on
// one connection, many requests back to back.
func TestCommandsOverSocket(t *testing.T) {
	d := agenttest.NewPTHI()
	c := open(t, d)

	u, err := c.GetUUID()
	if err != nil || u.String() != d.UUID {
		t.Fatalf("GetUUID %v, %v", u, err)
	}
	v, err := c.GetCodeVersions()
	if err != nil {
		t.Fatal(err)
	}
	for desc, want := range map[string]string{"AMT": "16.1.25", "Build Number": "2049", "Sku": "16392"} {
		if got, ok := v.Lookup(desc); !ok || got != want {
			t.Errorf("version %q = %q, %v; want %q", desc, got, ok, want)
		}
	}
	if v.BIOS != "BIOS-1.2.3" {
		t.Errorf("BIOS %q", v.BIOS)
	}
	if st, err := c.GetProvisioningState(); err != nil || st != mei.PreProvisioning {
		t.Fatalf("state %v, %v", st, err)
	}
	if m, err := c.GetControlMode(); err != nil || m != mei.ControlNone {
		t.Fatalf("mode %v, %v", m, err)
	}
	if s, err := c.GetPkiFqdnSuffix(); err != nil || s != "branch.example.com" {
		t.Fatalf("suffix %q, %v", s, err)
	}
	hashes, err := c.CertificateHashes()
	if err != nil {
		t.Fatal(err)
	}
	if len(hashes) != 2 || hashes[0].Name != "Example Root 1" || hashes[0].Algorithm != mei.SHA256 || !hashes[0].Active || !hashes[0].Default ||
		hex.EncodeToString(hashes[0].Hash) != hex.EncodeToString(d.Hashes[0].Sum) ||
		hashes[1].Algorithm != mei.SHA1 || len(hashes[1].Hash) != 20 || hashes[1].Active || hashes[1].Default {
		t.Fatalf("hashes %+v", hashes)
	}
	lan, err := c.GetLANInterfaceSettings(mei.GetLANInterfaceSettingsRequest{Index: 0})
	if err != nil || lan.IPv4.String() != "10.1.0.5" || lan.MAC.String() != "02:42:ac:11:00:05" || !lan.Enabled || !lan.LinkUp {
		t.Fatalf("lan %+v, %v", lan, err)
	}
	acct, err := c.GetLocalSystemAccount()
	if err != nil || acct.User != "$$OsAdmin" || acct.Password != d.Password {
		t.Fatalf("account %v, %v", acct, err)
	}
	if err := c.SetProvisioningServerOTP(mei.SetProvisioningServerOTPRequest{OTP: "OTP-12345678"}); err != nil {
		t.Fatal(err)
	}
	if err := c.StartConfiguration(); err != nil {
		t.Fatal(err)
	}
	if st, _ := c.GetProvisioningState(); st != mei.InProvisioning {
		t.Fatalf("after StartConfiguration: %v", st)
	}
	if err := c.StopConfiguration(); err != nil {
		t.Fatal(err)
	}
	d.Lock()
	d.Mode = 1
	d.Unlock()
	if err := c.Unprovision(mei.UnprovisionRequest{}); err != nil {
		t.Fatal(err)
	}
	d.Lock()
	defer d.Unlock()
	if d.OTP != "OTP-12345678" || d.State != 0 || d.Mode != 0 {
		t.Fatalf("device otp %q state %d mode %d", d.OTP, d.State, d.Mode)
	}
}

func TestFirmwareRefusals(t *testing.T) {
	d := agenttest.NewPTHI()
	d.State = 2
	c := open(t, d)
	err := c.SetProvisioningServerOTP(mei.SetProvisioningServerOTPRequest{OTP: "SECRET-OTP-1"})
	var se *mei.StatusError
	if !errors.As(err, &se) || se.Status != mei.StatusNotPermitted || se.Command != mei.CmdSetProvisioningServerOTP {
		t.Fatalf("got %v", err)
	}
	if strings.Contains(err.Error(), "SECRET-OTP-1") {
		t.Fatalf("error shows the OTP: %v", err)
	}
	if err := c.StartConfiguration(); !errors.As(err, &se) || se.Status != mei.StatusInvalidPTMode ||
		err.Error() != "pthi StartConfiguration: firmware status 0x3 AMT_STATUS_INVALID_PT_MODE" {
		t.Fatalf("got %v", err)
	}
	// A bad OTP never reaches the firmware.
	d.Lock()
	n := len(d.Seen)
	d.Unlock()
	if err := c.SetProvisioningServerOTP(mei.SetProvisioningServerOTPRequest{OTP: "short"}); err == nil || !strings.Contains(err.Error(), "5 characters") {
		t.Fatalf("got %v", err)
	}
	d.Lock()
	defer d.Unlock()
	if len(d.Seen) != n {
		t.Fatal("an invalid OTP was sent to the firmware")
	}
}

// TestMalformedOverSocket feeds broken responses through the real socket
// transport.
func TestMalformedOverSocket(t *testing.T) {
	hdr := func(cmd, length uint32, rest ...byte) []byte {
		b := []byte{1, 1, 0, 0}
		b = binary.LittleEndian.AppendUint32(b, cmd)
		b = binary.LittleEndian.AppendUint32(b, length)
		return append(b, rest...)
	}
	tests := []struct {
		name string
		raw  []byte
		want string
	}{
		{"wrong echo", hdr(0x0400006B, 8, 0, 0, 0, 0, 2, 0, 0, 0), "pthi GetControlMode: malformed response: answers command 0x0400006B, want 0x0480006B"},
		{"payload too long", hdr(0x0480006B, 9, 0, 0, 0, 0, 2, 0, 0, 0, 0), "pthi GetControlMode: malformed response: 5 payload bytes after the status, want 4"},
		{"truncated stream", hdr(0x0480006B, 8, 0, 0, 0, 0), "pthi GetControlMode: mei socket"}, // i/o timeout reading the rest
		{"huge length", hdr(0x0480006B, 1<<20), "announces 1048576 bytes"},
		{"status only", hdr(0x0480006B, 4, 0, 0, 0, 0), "0 payload bytes after the status, want 4"},
		{"unknown command status", hdr(0x0480006B, 4, 0x03, 0x08, 0, 0), "firmware status 0x803 AMT_STATUS_INVALID_COMMAND"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := agenttest.NewPTHI()
			d.Raw = map[uint32][]byte{uint32(mei.CmdGetControlMode): tt.raw}
			c := open(t, d)
			_, err := c.GetControlMode()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}

func TestDialErrors(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "regular")
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		spec, want string
	}{
		// No MEI hardware here: opening a missing device must say what is
		// missing; the ioctl path itself can only run on a vPro machine.
		{filepath.Join(dir, "mei0"), "no Intel MEI device — is the mei_me kernel module loaded"},
		{plain, "IOCTL_MEI_CONNECT_CLIENT: inappropriate ioctl for device: not an MEI device"},
		{"unix:" + filepath.Join(dir, "nothing"), "mei socket " + filepath.Join(dir, "nothing")},
		{"unix:", "socket path missing"},
		{"", "device path missing"},
	}
	for _, tt := range tests {
		_, err := mei.Dial(tt.spec, time.Second)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Dial(%q) = %v, want %q", tt.spec, err, tt.want)
		}
	}
}

// TestSocketTimeout: a peer that never answers does not hang the agent.
func TestSocketTimeout(t *testing.T) {
	path := agenttest.ShortSocketPath(t, "mute")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			defer c.Close()
			time.Sleep(2 * time.Second)
		}
	}()
	c, err := mei.Open("unix:"+path, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.GetUUID(); err == nil || !strings.Contains(err.Error(), "i/o timeout") {
		t.Fatalf("got %v", err)
	}
}

func TestSecretsNotFormatted(t *testing.T) {
	a := mei.LocalSystemAccount{User: "$$OsAdmin", Password: "hunter2-secret"}
	for _, s := range []string{fmt.Sprint(a), fmt.Sprintf("%+v %#v", a, a), a.LogValue().String()} {
		if strings.Contains(s, "hunter2") {
			t.Fatalf("%q shows the password", s)
		}
	}
}
