// Package mei is the simulated device's host interface: the AMTHI (PTHI)
// client an OS agent reaches through /dev/mei0, served on a Unix stream
// socket that carries exactly the bytes written to and read from the device
// node, one request then one response (agent-design.md §1).
//
// Framing (amt-protocol.md §7.1; Intel PTHI_MESSAGE_HEADER in PTHICommand.h
// of Intel's LMS, rpc-go pkg/pthi/types.go MessageHeader): a 12-byte header
// — version major u8 = 1, minor u8 = 1, reserved u16 = 0, command u32 LE,
// length u32 LE (payload bytes after the header) — then the payload. A
// response carries command | 0x00800000 and a payload that starts with the
// u32 LE status.
package mei

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// HeaderSize is the size of PTHI_MESSAGE_HEADER.
const HeaderSize = 12

// MaxPayload bounds a request's length field: more than any command takes
// (the largest, StartConfigurationHBased, has 390 bytes) and the usual MEI
// client buffer.
const MaxPayload = 4096

// ResponseBit marks a response command (COMMAND_FMT.IsResponse, bit 23).
const ResponseBit = 0x00800000

// Interface version AMT's host interface speaks (AMT_MAJOR_VERSION,
// AMT_MINOR_VERSION).
const (
	VersionMajor = 1
	VersionMinor = 1
)

// Header is PTHI_MESSAGE_HEADER.
type Header struct {
	Major, Minor uint8
	Reserved     uint16
	Command      uint32
	Length       uint32
}

// ErrMalformedHeader is a header the firmware cannot frame a message by;
// the connection cannot be resynchronised after it.
var ErrMalformedHeader = errors.New("malformed PTHI header")

// ErrTruncated is a well-formed header whose payload did not arrive.
var ErrTruncated = errors.New("truncated PTHI payload")

// Request is one framed request.
type Request struct {
	Header  Header
	Payload []byte
}

// ParseHeader decodes and checks a request header.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: %d of %d header bytes", ErrMalformedHeader, len(b), HeaderSize)
	}
	h := Header{
		Major: b[0], Minor: b[1],
		Reserved: binary.LittleEndian.Uint16(b[2:4]),
		Command:  binary.LittleEndian.Uint32(b[4:8]),
		Length:   binary.LittleEndian.Uint32(b[8:12]),
	}
	switch {
	case h.Major != VersionMajor || h.Minor != VersionMinor:
		return h, fmt.Errorf("%w: version %d.%d, want %d.%d", ErrMalformedHeader, h.Major, h.Minor, VersionMajor, VersionMinor)
	case h.Reserved != 0:
		return h, fmt.Errorf("%w: reserved field 0x%04x, want 0", ErrMalformedHeader, h.Reserved)
	case h.Length > MaxPayload:
		return h, fmt.Errorf("%w: length %d exceeds %d bytes", ErrMalformedHeader, h.Length, MaxPayload)
	}
	return h, nil
}

// ReadRequest reads one request. io.EOF means the peer closed between
// messages; ErrMalformedHeader and ErrTruncated wrap the rest. The header
// is returned with ErrTruncated so the caller can still answer it.
func ReadRequest(r io.Reader) (Request, error) {
	var hb [HeaderSize]byte
	if n, err := io.ReadFull(r, hb[:]); err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return Request{}, io.EOF
		}
		return Request{}, fmt.Errorf("%w: %d of %d header bytes: %v", ErrMalformedHeader, n, HeaderSize, err)
	}
	h, err := ParseHeader(hb[:])
	if err != nil {
		return Request{Header: h}, err
	}
	payload := make([]byte, h.Length)
	if n, err := io.ReadFull(r, payload); err != nil {
		return Request{Header: h}, fmt.Errorf("%w: command 0x%08x: %d of %d payload bytes: %v", ErrTruncated, h.Command, n, h.Length, err)
	}
	return Request{Header: h, Payload: payload}, nil
}

// EncodeResponse frames a response to command with status and data.
func EncodeResponse(command, status uint32, data []byte) []byte {
	b := make([]byte, HeaderSize+4+len(data))
	b[0], b[1] = VersionMajor, VersionMinor
	binary.LittleEndian.PutUint32(b[4:8], command|ResponseBit)
	binary.LittleEndian.PutUint32(b[8:12], uint32(4+len(data)))
	binary.LittleEndian.PutUint32(b[12:16], status)
	copy(b[16:], data)
	return b
}
