package mei

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/branchbox/branchbox/tests/amtsim/device"
)

// frameTimeout bounds the time from a message's first byte to its last: a
// write to /dev/mei0 is one message, so a stream that stops mid-message is
// a truncated request, not a slow one. Tests shorten it.
var frameTimeout = 5 * time.Second

// ListenUnix listens on a host-side Unix socket (MEI or LMS). A stale socket
// left by an earlier run is replaced; any other file at path is an error.
// The socket is 0600: like /dev/mei0, it hands out the $$OsAdmin password.
func ListenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("listen unix:%s: exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("listen unix:%s: remove stale socket: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen unix:%s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("listen unix:%s: %w", path, err)
	}
	return ln, nil
}

// Serve answers PTHI requests for dev on ln until ctx ends.
func Serve(ctx context.Context, dev *device.Device, ln net.Listener) error {
	log := dev.Log().With("interface", "mei")
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	closeAll := func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for c := range conns {
			_ = c.Close()
		}
	}
	stop := context.AfterFunc(ctx, closeAll)
	defer func() {
		stop()
		closeAll()
		wg.Wait()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("mei: accept: %w", err)
		}
		mu.Lock()
		conns[c] = true
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveConn(dev, c, log)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
	}
}

// serveConn answers requests in order until the peer closes, sends a
// header that cannot be framed, or truncates a payload.
func serveConn(dev *device.Device, c net.Conn, log *slog.Logger) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		// Idle between messages is fine; once a message starts it must
		// arrive whole.
		if _, err := br.Peek(1); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				log.Debug("MEI connection ended", "err", err.Error())
			}
			return
		}
		_ = c.SetReadDeadline(time.Now().Add(frameTimeout))
		req, err := ReadRequest(br)
		_ = c.SetReadDeadline(time.Time{})
		switch {
		case errors.Is(err, ErrTruncated):
			// Answer what can be answered, then drop the connection: the
			// stream cannot be resynchronised.
			log.Warn("MEI request truncated, connection closed", "command", CommandName(req.Header.Command), "reason", err.Error())
			write(c, EncodeResponse(req.Header.Command, device.PTInvalidMessageLength, nil), log)
			return
		case err != nil:
			log.Warn("MEI request refused, connection closed", "reason", err.Error())
			return
		}
		resp := Handle(dev, req)
		log.Debug("MEI request", "command", CommandName(req.Header.Command), "length", req.Header.Length, "status", statusOf(resp))
		if !write(c, resp, log) {
			return
		}
	}
}

func write(c net.Conn, b []byte, log *slog.Logger) bool {
	_ = c.SetWriteDeadline(time.Now().Add(frameTimeout))
	if _, err := c.Write(b); err != nil {
		log.Debug("MEI response not delivered", "err", err.Error())
		return false
	}
	return true
}

func statusOf(resp []byte) uint32 { return binary.LittleEndian.Uint32(resp[12:16]) }
