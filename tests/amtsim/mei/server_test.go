package mei

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/branchbox/branchbox/tests/amtsim/device"
)

// serveSocket runs Serve for a fresh device on a Unix socket.
func serveSocket(t *testing.T) (*device.Device, string) {
	t.Helper()
	dev := newDevice(t, nil)
	path := filepath.Join(t.TempDir(), "mei")
	ln, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, dev, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return dev, path
}

func dial(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.UnixConn)
}

// readResponse reads one response: header, then its length in bytes.
func readResponse(t *testing.T, c net.Conn) (cmd, status uint32, data []byte) {
	t.Helper()
	h := make([]byte, 12)
	if _, err := io.ReadFull(c, h); err != nil {
		t.Fatalf("response header: %v", err)
	}
	b := make([]byte, binary.LittleEndian.Uint32(h[8:12]))
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("response payload: %v", err)
	}
	return binary.LittleEndian.Uint32(h[4:8]), binary.LittleEndian.Uint32(b[:4]), b[4:]
}

// expectClosed checks that the server closed the connection without
// answering.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	var b [1]byte
	if n, err := c.Read(b[:]); !errors.Is(err, io.EOF) {
		t.Fatalf("connection still open: read %d bytes, %v", n, err)
	}
}

func TestServeManyRequestsOnOneConnection(t *testing.T) {
	dev, path := serveSocket(t)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	c := dial(t, path)
	// Written back to back before reading: answered one by one, in order.
	var batch []byte
	for _, r := range [][]byte{
		req(CmdSetProvisioningServerOTP, otpPayload("Branch-OTP-1")),
		req(0x04000099, nil), // unknown: answered, connection kept
		req(CmdStartConfiguration, nil),
		req(CmdGetProvisioningState, nil),
	} {
		batch = append(batch, r...)
	}
	if _, err := c.Write(batch); err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		cmd, status uint32
		data        []byte
	}{
		{CmdSetProvisioningServerOTP, 0, nil},
		{0x04000099, device.PTInvalidCommand, nil},
		{CmdStartConfiguration, 0, nil},
		{CmdGetProvisioningState, 0, []byte{1, 0, 0, 0}},
	} {
		cmd, st, data := readResponse(t, c)
		if cmd != want.cmd|ResponseBit || st != want.status || string(data) != string(want.data) {
			t.Fatalf("0x%08x: status %d, % x; want status %d, % x", cmd, st, data, want.status, want.data)
		}
	}
	if st, _ := dev.State(); st != device.InProvisioning {
		t.Fatalf("state %s", st)
	}
}

func TestServeHostileInput(t *testing.T) {
	old := frameTimeout
	frameTimeout = 300 * time.Millisecond
	t.Cleanup(func() { frameTimeout = old })
	_, path := serveSocket(t)
	tests := []struct {
		name string
		send []byte
		half bool   // close the write side after sending
		want uint32 // 0: no answer, the connection is closed
	}{
		{"wrong major version", raw(2, 1, 0, CmdGetUUID, 0, nil), false, 0},
		{"wrong minor version", raw(1, 2, 0, CmdGetUUID, 0, nil), false, 0},
		{"reserved bits", raw(1, 1, 7, CmdGetUUID, 0, nil), false, 0},
		{"length over 4 KiB", raw(1, 1, 0, CmdGetUUID, 4097, make([]byte, 64)), false, 0},
		{"header cut short", req(CmdGetUUID, nil)[:5], true, 0},
		{"payload cut short, then EOF", raw(1, 1, 0, CmdGetLocalSystemAccount, 40, make([]byte, 8)), true, device.PTInvalidMessageLength},
		{"payload that never arrives", raw(1, 1, 0, CmdGetLocalSystemAccount, 40, make([]byte, 8)), false, device.PTInvalidMessageLength},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, path)
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if tc.half {
				_ = c.CloseWrite()
			}
			if tc.want != 0 {
				cmd, st, _ := readResponse(t, c)
				if cmd != CmdGetLocalSystemAccount|ResponseBit || st != tc.want {
					t.Fatalf("answer 0x%08x status %d", cmd, st)
				}
			}
			expectClosed(t, c)
		})
	}
	// The server keeps serving other connections.
	c := dial(t, path)
	if _, err := c.Write(req(CmdGetControlMode, nil)); err != nil {
		t.Fatal(err)
	}
	if _, st, data := readResponse(t, c); st != 0 || len(data) != 4 {
		t.Fatalf("after hostile clients: status %d, % x", st, data)
	}
}

func TestListenUnixRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(path); err == nil {
		t.Fatal("a regular file was replaced by a socket")
	}
	// A stale socket (left by a killed run) is replaced.
	stale := filepath.Join(t.TempDir(), "stale")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln2, err := ListenUnix(stale)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	ln2.Close()
}
