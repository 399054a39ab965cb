package mei

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// Transport carries whole PTHI messages: one request written, one
// response read, in order.
type Transport interface {
	// RoundTrip sends one framed request and returns one whole response
	// message as received; the Client checks it.
	RoundTrip(req []byte) ([]byte, error)
	Close() error
}

// DefaultDevice is the Linux MEI character device.
const DefaultDevice = "/dev/mei0"

// Dial connects to the AMTHI client: "unix:PATH" is a Unix stream socket
// (amtsim), anything else a MEI character device.
func Dial(spec string, timeout time.Duration) (Transport, error) {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if path, ok := strings.CutPrefix(spec, "unix:"); ok {
		if path == "" {
			return nil, errors.New(`mei "unix:": socket path missing`)
		}
		return dialSocket(path, timeout)
	}
	if spec == "" {
		return nil, errors.New("mei: device path missing")
	}
	return openDevice(spec, timeout)
}

// socket carries exactly the bytes /dev/mei0 would, back to back. A
// stream has no message boundaries, so the response header's length
// field delimits each response.
type socket struct {
	conn    net.Conn
	path    string
	timeout time.Duration
}

func dialSocket(path string, timeout time.Duration) (Transport, error) {
	conn, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, fmt.Errorf("mei socket %s: %w", path, err)
	}
	return &socket{conn: conn, path: path, timeout: timeout}, nil
}

func (s *socket) RoundTrip(req []byte) ([]byte, error) {
	if err := s.conn.SetDeadline(time.Now().Add(s.timeout)); err != nil {
		return nil, fmt.Errorf("mei socket %s: %w", s.path, err)
	}
	if _, err := s.conn.Write(req); err != nil {
		return nil, fmt.Errorf("mei socket %s: write: %w", s.path, err)
	}
	msg := make([]byte, headerLen, 64)
	if _, err := io.ReadFull(s.conn, msg); err != nil {
		return nil, fmt.Errorf("mei socket %s: reading response header: %w", s.path, err)
	}
	n := binary.LittleEndian.Uint32(msg[8:])
	if n > MaxMessage-headerLen {
		// The rest of the stream cannot be trusted to be in step.
		s.conn.Close()
		return nil, fmt.Errorf("mei socket %s: response header announces %d bytes, more than %d", s.path, n, MaxMessage-headerLen)
	}
	msg = append(msg, make([]byte, n)...)
	if _, err := io.ReadFull(s.conn, msg[headerLen:]); err != nil {
		return nil, fmt.Errorf("mei socket %s: reading %d-byte response body: %w", s.path, n, err)
	}
	return msg, nil
}

func (s *socket) Close() error { return s.conn.Close() }
