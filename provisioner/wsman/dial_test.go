package wsman

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// relayEnd is the far end of one long-lived connection, as an agent's
// relay is: it answers each request in order, says "Connection: close"
// like AMT after activation, and keeps the connection open regardless.
type relayEnd struct {
	mu      sync.Mutex
	headers []string // Branchbox-Test of each request, in order
	delay   time.Duration
}

func (e *relayEnd) serve(conn net.Conn) {
	br := bufio.NewReader(conn)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		e.mu.Lock()
		e.headers = append(e.headers, req.Header.Get("Branchbox-Test"))
		delay := e.delay
		e.mu.Unlock()
		time.Sleep(delay)
		fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/soap+xml\r\nContent-Length: %d\r\n\r\n%s", len(okBody), okBody)
	}
}

// countingConn records whether its user closed it.
type countingConn struct {
	net.Conn
	closed atomic.Bool
}

func (c *countingConn) Close() error { c.closed.Store(true); return c.Conn.Close() }

// relayPair is one connection handed out by every dial, as a relay does.
func relayPair(t *testing.T, end *relayEnd) (dial func(context.Context) (net.Conn, error), conn *countingConn, dials *atomic.Int32) {
	t.Helper()
	a, b := net.Pipe()
	go end.serve(b)
	t.Cleanup(func() { a.Close(); b.Close() })
	conn = &countingConn{Conn: a}
	dials = new(atomic.Int32)
	return func(context.Context) (net.Conn, error) {
		dials.Add(1)
		if conn.closed.Load() {
			return nil, errors.New("relay closed")
		}
		return conn, nil
	}, conn, dials
}

func TestDialSharesOneConnectionBetweenClients(t *testing.T) {
	end := &relayEnd{}
	dial, conn, dials := relayPair(t, end)
	osadmin := New(Options{URL: "http://localhost:16992/wsman", Dial: dial, Header: http.Header{"Branchbox-Test": {"osadmin"}, "Authorization": {"leak"}}})
	admin := New(Options{URL: "http://localhost:16992/wsman", Dial: dial})
	ctx := context.Background()
	for i, c := range []*Client{osadmin, osadmin, admin, osadmin} {
		doc, err := c.Post(ctx, "<Envelope/>")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if doc.Value("DigestRealm") == "" {
			t.Fatalf("request %d: no realm in the answer", i)
		}
		c.Close()
	}
	if conn.closed.Load() {
		t.Error("Close closed the dialer's connection")
	}
	end.mu.Lock()
	got := strings.Join(end.headers, ",")
	end.mu.Unlock()
	if got != "osadmin,osadmin,,osadmin" {
		t.Errorf("extra header per request %q, want osadmin,osadmin,,osadmin", got)
	}
	if n := dials.Load(); n != 4 {
		t.Errorf("%d dials, want one per Client after each Close (4)", n)
	}
}

func TestDialBrokenExchangeClosesConnection(t *testing.T) {
	end := &relayEnd{delay: 300 * time.Millisecond}
	dial, conn, _ := relayPair(t, end)
	c := New(Options{URL: "http://localhost/wsman", Dial: dial, Timeout: 50 * time.Millisecond})
	_, err := c.Post(context.Background(), "<Envelope/>")
	if !IsTransient(err) {
		t.Fatalf("err = %v, want a transport error", err)
	}
	if !conn.closed.Load() {
		t.Error("a connection whose answer never came was left open: the next answer on it would be this one's")
	}
	if _, err := c.Post(context.Background(), "<Envelope/>"); err == nil || !strings.Contains(err.Error(), "relay closed") {
		t.Errorf("after the break: %v, want the dialer's error", err)
	}
}

func TestDialHonoursContext(t *testing.T) {
	end := &relayEnd{delay: time.Second}
	dial, conn, _ := relayPair(t, end)
	c := New(Options{URL: "http://localhost/wsman", Dial: dial})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(30*time.Millisecond, cancel)
	start := time.Now()
	_, err := c.Post(ctx, "<Envelope/>")
	if !errors.Is(err, context.Canceled) || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("err = %v after %v", err, time.Since(start))
	}
	if !conn.closed.Load() {
		t.Error("connection left open after a cancelled exchange")
	}
}
