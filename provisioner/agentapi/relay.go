package agentapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/branchbox/branchbox/internal/httpjson"
	"github.com/branchbox/branchbox/provisioner"
	"github.com/branchbox/branchbox/provisioner/session"
	"github.com/branchbox/branchbox/provisioner/wsman"
)

// Relay protocol names and the header that asks the agent to log in to
// LMS as $$OsAdmin itself.
const (
	relayProtocol   = "branchbox-relay/1"
	RelayAuthHeader = "Branchbox-Relay-Auth"
	relayOsAdmin    = "osadmin"
	// lmsURL is what relayed WS-Man requests are addressed to: the agent
	// forwards them to its LMS endpoint, whatever address that has.
	lmsURL    = "http://localhost:16992/wsman"
	resultURL = "http://localhost/branchbox/v1/result"
)

// activateRequest is the body of POST /agent/v1/activate.
type activateRequest struct {
	Mode string `json:"mode"`
	Info Info   `json:"info"`
}

// Result is the server's last word on the relay, POST /branchbox/v1/result.
type Result struct {
	UUID string `json:"uuid"`
	// State is the device record's: activated or failed.
	State string `json:"state"`
	// ControlMode is the device's: acm once AdminSetup took effect, else
	// what the agent reported.
	ControlMode string `json:"control_mode"`
	// Step is the step that failed, "done" on success.
	Step  string `json:"step"`
	Error string `json:"error"`
}

func (s *Server) activate(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	if !headerHas(r.Header, "Connection", "upgrade") || !strings.EqualFold(r.Header.Get("Upgrade"), relayProtocol) {
		w.Header().Set("Upgrade", relayProtocol)
		httpjson.Error(w, http.StatusUpgradeRequired, fmt.Errorf("activate needs Connection: Upgrade and Upgrade: %s", relayProtocol))
		return
	}
	var req activateRequest
	if err := decode(r, &req); err != nil {
		httpjson.Error(w, http.StatusBadRequest, err)
		return
	}
	if req.Mode != "acm" {
		httpjson.Error(w, http.StatusBadRequest, fmt.Errorf("mode: %q is not supported (only \"acm\")", req.Mode))
		return
	}
	info, err := validate(req.Info, "info.")
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err)
		return
	}
	if code, err := s.precheck(c.site, info, true); err != nil {
		httpjson.Error(w, code, err)
		return
	}
	claim, err := s.o.Provisioner.ClaimHostBased(r.Context(), provisioner.HostBasedRequest{
		UUID: info.uuid, Site: c.site.Name, IP: info.ip, Hashes: info.active, AMTVersion: info.AMTVersion,
		Origin: "agent " + r.RemoteAddr,
	})
	switch {
	case errors.Is(err, provisioner.ErrBusy):
		httpjson.Error(w, http.StatusConflict, err)
		return
	case r.Context().Err() != nil:
		httpjson.Error(w, http.StatusServiceUnavailable, fmt.Errorf("device %s: %w", info.uuid, r.Context().Err()))
		return
	case err != nil:
		httpjson.Error(w, http.StatusConflict, err)
		return
	}

	hj, ok := w.(http.Hijacker)
	if !ok {
		claim.Abandon("agent relay: the connection cannot be upgraded")
		httpjson.Error(w, http.StatusInternalServerError, errors.New("connection cannot be upgraded"))
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		claim.Abandon("agent relay: " + err.Error())
		return
	}
	s.relays.Add(1)
	defer s.relays.Done()
	defer conn.Close()
	conn.SetDeadline(time.Time{})
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n%s: %s\r\n\r\n", relayProtocol, serverProofHeader, c.serverProof)
	if err := brw.Flush(); err != nil {
		claim.Abandon("agent relay: writing the upgrade: " + err.Error())
		return
	}

	rl := &relay{conn: conn, br: brw.Reader}
	ctx, cancel := context.WithTimeout(r.Context(), s.o.RelayTimeout)
	res, err := claim.Run(ctx, rl)
	cancel()
	out := Result{UUID: info.uuid, State: "activated", ControlMode: info.ControlMode, Step: "done"}
	if res.AdminMode || res.Activated {
		out.ControlMode = "acm"
	}
	if err != nil {
		out.State, out.Error, out.Step = "failed", err.Error(), "session"
		var se *session.StepError
		if errors.As(err, &se) {
			out.Step = se.Step
		}
	}
	s.o.Log.Info("host-based activation", "uuid", info.uuid, "site", c.site.Name, "state", out.State, "step", out.Step, "error", out.Error)
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
	defer rcancel()
	if err := rl.sendResult(rctx, out); err != nil {
		s.o.Log.Warn("agent relay: the result did not reach the agent", "uuid", info.uuid, "err", err)
	}
}

// headerHas reports whether a comma-separated header lists token.
func headerHas(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// relay is the upgraded connection: the server writes HTTP requests, the
// agent answers each in order. It is a session.HostTransport: every
// client it makes uses this one connection, one exchange at a time.
type relay struct {
	conn net.Conn
	br   *bufio.Reader // the hijack's, which may already hold bytes

	mu     sync.Mutex
	closed bool
}

var errRelayClosed = errors.New("agent relay closed")

func (r *relay) dial(context.Context) (net.Conn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errRelayClosed
	}
	return relayConn{Conn: r.conn, r: r}, nil
}

// relayConn reads through the relay's buffer; closing it closes the relay,
// which a WS-Man client does only when an exchange broke the stream.
type relayConn struct {
	net.Conn
	r *relay
}

func (c relayConn) Read(p []byte) (int, error) { return c.r.br.Read(p) }
func (c relayConn) Close() error               { return c.r.close() }

func (r *relay) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	return r.conn.Close()
}

// OsAdmin asks the agent to log in as $$OsAdmin: the password from
// GetLocalSystemAccount never leaves the host.
func (r *relay) OsAdmin() *wsman.Client {
	return wsman.New(wsman.Options{URL: lmsURL, Dial: r.dial, Header: http.Header{RelayAuthHeader: {relayOsAdmin}}})
}

// Admin answers LMS's digest challenges here; the agent passes them on.
func (r *relay) Admin(cred wsman.Credential) *wsman.Client {
	return wsman.New(wsman.Options{URL: lmsURL, Dial: r.dial, Credentials: []wsman.Credential{cred}})
}

// sendResult tells the agent how the activation ended; it answers 200 and
// closes.
func (r *relay) sendResult(ctx context.Context, res Result) error {
	conn, err := r.dial(ctx)
	if err != nil {
		return err
	}
	body, err := json.Marshal(res)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, resultURL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if err := req.Write(conn); err != nil {
		return err
	}
	resp, err := http.ReadResponse(r.br, req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("agent answered the result with HTTP %d", resp.StatusCode)
	}
	return nil
}
