package mei

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// raw builds request bytes by hand, independently of the package's encoder.
func raw(major, minor byte, reserved uint16, cmd, length uint32, payload []byte) []byte {
	b := []byte{major, minor}
	b = binary.LittleEndian.AppendUint16(b, reserved)
	b = binary.LittleEndian.AppendUint32(b, cmd)
	b = binary.LittleEndian.AppendUint32(b, length)
	return append(b, payload...)
}

// req is a well-formed request.
func req(cmd uint32, payload []byte) []byte {
	return raw(1, 1, 0, cmd, uint32(len(payload)), payload)
}

func TestReadRequest(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		wantErr error // nil, io.EOF, ErrMalformedHeader or ErrTruncated
		cmd     uint32
		payload []byte
	}{
		{"no payload", req(CmdGetUUID, nil), nil, CmdGetUUID, []byte{}},
		{"payload", req(CmdGetCertificateHashEntry, []byte{3, 0, 0, 0}), nil, CmdGetCertificateHashEntry, []byte{3, 0, 0, 0}},
		{"4 KiB payload", req(0x04000099, make([]byte, 4096)), nil, 0x04000099, make([]byte, 4096)},
		{"empty stream", nil, io.EOF, 0, nil},
		{"half a header", req(CmdGetUUID, nil)[:7], ErrMalformedHeader, 0, nil},
		{"major version 2", raw(2, 1, 0, CmdGetUUID, 0, nil), ErrMalformedHeader, 0, nil},
		{"minor version 0", raw(1, 0, 0, CmdGetUUID, 0, nil), ErrMalformedHeader, 0, nil},
		{"reserved set", raw(1, 1, 0x0100, CmdGetUUID, 0, nil), ErrMalformedHeader, 0, nil},
		{"length over 4 KiB", raw(1, 1, 0, CmdGetUUID, 4097, nil), ErrMalformedHeader, 0, nil},
		{"length 4 GiB", raw(1, 1, 0, CmdGetUUID, 0xffffffff, nil), ErrMalformedHeader, 0, nil},
		{"truncated payload", raw(1, 1, 0, CmdGetLocalSystemAccount, 40, make([]byte, 10)), ErrTruncated, CmdGetLocalSystemAccount, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ReadRequest(bytes.NewReader(tc.in))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
				if tc.wantErr == ErrTruncated && r.Header.Command != tc.cmd {
					t.Fatalf("truncated request lost its header: %+v", r.Header)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Header.Command != tc.cmd || !bytes.Equal(r.Payload, tc.payload) {
				t.Fatalf("got %+v", r)
			}
		})
	}
}

// Two requests back to back on one stream are two messages.
func TestReadRequestBackToBack(t *testing.T) {
	stream := bytes.NewReader(append(req(CmdGetUUID, nil), req(CmdGetLANInterfaceSettings, []byte{0, 0, 0, 0})...))
	for _, want := range []uint32{CmdGetUUID, CmdGetLANInterfaceSettings} {
		r, err := ReadRequest(stream)
		if err != nil || r.Header.Command != want {
			t.Fatalf("got %+v, %v; want command 0x%08x", r.Header, err, want)
		}
	}
	if _, err := ReadRequest(stream); err != io.EOF {
		t.Fatalf("after the last message: %v", err)
	}
}

func TestEncodeResponse(t *testing.T) {
	got := EncodeResponse(CmdGetControlMode, 0, []byte{2, 0, 0, 0})
	want := []byte{1, 1, 0, 0, 0x6b, 0, 0x80, 0x04, 8, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0}
	if !bytes.Equal(got, want) {
		t.Fatalf("% x\nwant % x", got, want)
	}
}
