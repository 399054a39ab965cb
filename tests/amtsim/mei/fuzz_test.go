package mei

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// FuzzReadRequest feeds arbitrary streams through the frame parser and
// every request that frames through the command handlers: parsing never
// panics, every error is one the server knows how to act on, and every
// answer is a well-formed response.
func FuzzReadRequest(f *testing.F) {
	for _, seed := range [][]byte{
		req(CmdGetUUID, nil),
		req(CmdGetCodeVersions, nil),
		req(CmdGetCertificateHashEntry, u32le(3)),
		req(CmdGetCertificateHashEntry, u32le(0xffffffff)),
		req(CmdGetLocalSystemAccount, make([]byte, 40)),
		req(CmdSetProvisioningServerOTP, otpPayload("Branch-OTP-1")),
		req(CmdSetProvisioningServerOTP, []byte{0xff, 0xff, 'x'}),
		append(req(CmdStartConfiguration, nil), req(CmdStopConfiguration, nil)...),
		req(CmdGetLANInterfaceSettings, u32le(0)),
		req(CmdUnprovision, u32le(1)),
		req(0x04000099, []byte{1, 2, 3}),
		raw(2, 1, 0, CmdGetUUID, 0, nil),
		raw(1, 1, 0, CmdGetUUID, 4097, nil),
		raw(1, 1, 0, CmdGetLocalSystemAccount, 40, make([]byte, 3)),
		{1, 1, 0},
	} {
		f.Add(seed)
	}
	dev := newDevice(f, nil)
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		for {
			request, err := ReadRequest(r)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, ErrMalformedHeader) && !errors.Is(err, ErrTruncated) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return
			}
			if len(request.Payload) != int(request.Header.Length) || request.Header.Length > MaxPayload {
				t.Fatalf("framed %d bytes for length %d", len(request.Payload), request.Header.Length)
			}
			out := Handle(dev, request)
			if len(out) < 16 || binary.LittleEndian.Uint32(out[8:12]) != uint32(len(out)-12) {
				t.Fatalf("malformed response % x", out)
			}
			if binary.LittleEndian.Uint32(out[4:8]) != request.Header.Command|ResponseBit {
				t.Fatalf("response to the wrong command: % x", out[:8])
			}
			if binary.LittleEndian.Uint32(out[12:16]) != 0 && len(out) != 16 {
				t.Fatalf("error response with data: % x", out)
			}
		}
	})
}
