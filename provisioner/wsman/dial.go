package wsman

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// dialTransport carries requests over connections from Options.Dial, one
// exchange at a time: write the request, read the whole answer, and
// nothing in between. http.Transport does not fit a relayed connection:
// it reads ahead in the background (stealing the next answer from
// whoever uses the connection next), and closes idle connections on a
// timer.
//
// The connection belongs to the dialer. Close (CloseIdleConnections)
// forgets an idle one without closing it, so another Client — or the
// dialer itself — can go on using it; one an exchange broke (a write or
// read failed, a deadline hit, an answer too long) is closed, since no
// one can tell where the next answer starts. A "Connection: close" in an
// answer is not obeyed: over a relay it is the far endpoint's, and if the
// connection really ends, the next exchange fails and closes it.
type dialTransport struct {
	dial func(ctx context.Context) (net.Conn, error)

	mu   sync.Mutex
	conn net.Conn
	br   *bufio.Reader
}

// aLongTimeAgo is a deadline in the past, to abort a blocked read or write.
var aLongTimeAgo = time.Unix(1, 0)

func (t *dialTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ctx := req.Context()
	if t.conn == nil {
		conn, err := t.dial(ctx)
		if err != nil {
			return nil, fmt.Errorf("dial: %w", err)
		}
		t.conn, t.br = conn, bufio.NewReader(conn)
	}
	conn := t.conn
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(aLongTimeAgo) })
	resp, body, err := t.exchange(req)
	if !stop() && err == nil {
		// The context ended after the answer was read: the answer is
		// whole, but the deadline is now in the past for whoever is next.
		err = ctx.Err()
	}
	if err != nil {
		t.conn.Close()
		t.conn, t.br = nil, nil
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	return resp, nil
}

func (t *dialTransport) exchange(req *http.Request) (*http.Response, []byte, error) {
	if err := req.Write(t.conn); err != nil {
		return nil, nil, err
	}
	resp, err := http.ReadResponse(t.br, req)
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	resp.Body.Close()
	if err != nil {
		return nil, nil, err
	}
	if len(body) > maxResponse {
		return nil, nil, errors.New("answer larger than 4 MiB")
	}
	return resp, body, nil
}

// CloseIdleConnections forgets the connection: it is the dialer's to close.
func (t *dialTransport) CloseIdleConnections() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.conn, t.br = nil, nil
}
