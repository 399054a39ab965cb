package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/branchbox/branchbox/provisioner/agent/mei"
	"github.com/branchbox/branchbox/provisioner/wsman"
)

// Relay limits (agent-design.md §4).
const (
	maxRelayRequest = 1 << 20
	maxHeaderBytes  = 64 << 10
	relayLifetime   = 10 * time.Minute
	// maxLMSResponse matches what provisioner/wsman accepts from a device.
	maxLMSResponse = 4 << 20

	relayAuthHeader = "Branchbox-Relay-Auth"
	resultPath      = "/branchbox/v1/result"
)

var errRequestTooLarge = fmt.Errorf("relay: request larger than %d bytes", maxRelayRequest)

// budget bounds what one relayed request may make the agent read:
// http.ReadRequest itself has no limit on header or line size.
type budget struct {
	r    io.Reader
	left int64
}

func (b *budget) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errRequestTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

// LMS is the local WS-Man endpoint (Intel LMS on 16992, or amtsim's).
type LMS struct {
	addr   string
	dial   func(context.Context) (net.Conn, error)
	client *http.Client
	url    string
}

// DefaultLMS is where Intel LMS listens.
const DefaultLMS = "127.0.0.1:16992"

// NewLMS takes "unix:PATH" or host:port.
func NewLMS(spec string, timeout time.Duration) (*LMS, error) {
	network, addr := "tcp", spec
	if p, ok := strings.CutPrefix(spec, "unix:"); ok {
		if p == "" {
			return nil, errors.New(`--lms "unix:": socket path missing`)
		}
		network, addr = "unix", p
	} else if _, _, err := net.SplitHostPort(spec); err != nil {
		return nil, fmt.Errorf("--lms %q: want host:port or unix:PATH: %w", spec, err)
	}
	if timeout <= 0 {
		timeout = time.Minute
	}
	d := &net.Dialer{Timeout: timeout}
	dial := func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, network, addr) }
	tr := &http.Transport{
		DialContext:        func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		MaxConnsPerHost:    1,
		DisableCompression: true,
		IdleConnTimeout:    30 * time.Second,
	}
	host := spec
	if network == "unix" {
		host = "localhost"
	}
	return &LMS{addr: spec, dial: dial, client: &http.Client{Transport: tr, Timeout: timeout}, url: "http://" + host + "/wsman"}, nil
}

// Check dials once, so a missing LMS is reported before the server starts
// a relay it cannot finish.
func (l *LMS) Check(ctx context.Context) error {
	conn, err := l.dial(ctx)
	if err != nil {
		return fmt.Errorf("LMS at %s unreachable (is lms running? --lms sets the address): %w", l.addr, err)
	}
	return conn.Close()
}

// Result is the server's final word on a relayed activation.
type Result struct {
	UUID        string `json:"uuid"`
	State       string `json:"state"`
	ControlMode string `json:"control_mode"`
	Step        string `json:"step"`
	Error       string `json:"error"`
}

// Activated is true only for a clean admin-control-mode result.
func (r Result) Activated() bool { return r.Error == "" && r.ControlMode == "acm" }

// relay answers the server's requests on the upgraded connection until it
// posts the result.
type relay struct {
	conn   net.Conn
	br     *bufio.Reader
	budget *budget
	lms    *LMS
	osadm  *wsman.DigestAuth
	log    *slog.Logger
}

func newRelay(ex *exchange, lms *LMS, acct mei.LocalSystemAccount, log *slog.Logger) *relay {
	return &relay{conn: ex.conn, br: ex.br, budget: ex.budget, lms: lms, osadm: wsman.NewDigestAuth(acct.User, acct.Password), log: log}
}

// relayResponse is one answer written back to the server.
type relayResponse struct {
	status int
	header http.Header
	body   []byte
}

func textResponse(status int, msg string) relayResponse {
	return relayResponse{status: status, header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, body: []byte(msg + "\n")}
}

func (r *relay) run(ctx context.Context) (Result, error) {
	defer r.conn.Close()
	if err := r.conn.SetDeadline(time.Now().Add(relayLifetime)); err != nil {
		return Result{}, err
	}
	stop := context.AfterFunc(ctx, func() { r.conn.SetDeadline(time.Now()) })
	defer stop()
	for n := 1; ; n++ {
		r.budget.left = maxRelayRequest + maxHeaderBytes
		req, err := http.ReadRequest(r.br)
		if errors.Is(err, io.EOF) {
			return Result{}, errors.New("relay: the server closed the connection before sending its result")
		}
		if err != nil {
			return Result{}, fmt.Errorf("relay: reading request %d: %w", n, err)
		}
		resp, result, done, err := r.handle(ctx, req)
		if err != nil {
			// The stream is out of step after this: say why if the
			// request was only too large, then end.
			if errors.Is(err, errRequestTooLarge) {
				r.write(textResponse(http.StatusRequestEntityTooLarge, err.Error()))
			}
			return Result{}, err
		}
		if err := r.write(resp); err != nil {
			return Result{}, fmt.Errorf("relay: answering %s %s: %w", req.Method, req.URL.Path, err)
		}
		if done {
			return result, nil
		}
	}
}

func (r *relay) write(resp relayResponse) error {
	h := resp.header.Clone()
	if h == nil {
		h = http.Header{}
	}
	out := &http.Response{
		StatusCode: resp.status, ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(bytes.NewReader(resp.body)), ContentLength: int64(len(resp.body)),
	}
	return out.Write(r.conn)
}

// handle answers one request. err means the relay must end.
func (r *relay) handle(ctx context.Context, req *http.Request) (relayResponse, Result, bool, error) {
	if req.ContentLength > maxRelayRequest {
		return relayResponse{}, Result{}, false, errRequestTooLarge
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, maxRelayRequest+1))
	if errors.Is(err, errRequestTooLarge) || len(body) > maxRelayRequest {
		return relayResponse{}, Result{}, false, errRequestTooLarge
	}
	if err != nil {
		return relayResponse{}, Result{}, false, fmt.Errorf("relay: reading the body of %s %s: %w", req.Method, req.URL.Path, err)
	}
	switch req.URL.Path {
	case "/wsman":
		if req.Method != http.MethodPost {
			return textResponse(http.StatusMethodNotAllowed, "relay: /wsman takes POST"), Result{}, false, nil
		}
		return r.forward(ctx, req, body), Result{}, false, nil
	case resultPath:
		if req.Method != http.MethodPost {
			return textResponse(http.StatusMethodNotAllowed, "relay: "+resultPath+" takes POST"), Result{}, false, nil
		}
		var res Result
		if err := json.Unmarshal(body, &res); err != nil {
			return textResponse(http.StatusBadRequest, "relay: result: "+err.Error()), Result{}, false, nil
		}
		r.log.Info("relay: result", "uuid", res.UUID, "state", res.State, "control_mode", res.ControlMode, "step", res.Step, "error", res.Error)
		return relayResponse{status: http.StatusOK, header: http.Header{"Content-Type": {"application/json"}}, body: []byte(`{"ok":true}`)}, res, true, nil
	}
	r.log.Warn("relay: unknown path", "method", req.Method, "path", req.URL.Path)
	return textResponse(http.StatusNotFound, "relay: no such path "+req.URL.Path), Result{}, false, nil
}

// hopHeaders belong to one connection and are not forwarded (RFC 9110 §7.6.1).
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length"}

func forwardHeader(h http.Header) http.Header {
	out := h.Clone()
	for _, k := range hopHeaders {
		out.Del(k)
	}
	return out
}

// forward sends one WS-Man envelope to LMS. As $$OsAdmin the agent
// answers LMS's digest challenge itself and the password never leaves the
// host; otherwise the server's own Authorization goes through unchanged and
// LMS's 401s come back to it.
func (r *relay) forward(ctx context.Context, req *http.Request, body []byte) relayResponse {
	mode := req.Header.Get(relayAuthHeader)
	osadmin := strings.EqualFold(mode, "osadmin")
	if mode != "" && !osadmin {
		return textResponse(http.StatusBadRequest, fmt.Sprintf("relay: %s %q unknown (only osadmin)", relayAuthHeader, mode))
	}
	hdr := forwardHeader(req.Header)
	hdr.Del(relayAuthHeader)
	if !osadmin {
		resp := r.post(ctx, hdr, body)
		r.log.Info("relay: wsman", "auth", "server", "status", resp.status)
		return resp
	}
	hdr.Del("Authorization")
	var resp relayResponse
	// One try with the cached challenge (or none yet), one more after a
	// fresh challenge; a second 401 is a wrong password and goes back.
	for range 2 {
		if a := r.osadm.Authorization(http.MethodPost, "/wsman"); a != "" {
			hdr.Set("Authorization", a)
		}
		resp = r.post(ctx, hdr, body)
		if resp.status != http.StatusUnauthorized {
			break
		}
		if err := r.osadm.Challenge(resp.header.Get("WWW-Authenticate")); err != nil {
			r.log.Warn("relay: LMS 401 without a usable digest challenge", "err", err)
			break
		}
	}
	r.log.Info("relay: wsman", "auth", "osadmin", "status", resp.status)
	return resp
}

func (r *relay) post(ctx context.Context, hdr http.Header, body []byte) relayResponse {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.lms.url, bytes.NewReader(body))
	if err != nil {
		return textResponse(http.StatusBadGateway, "relay: "+err.Error())
	}
	req.Header = hdr.Clone()
	resp, err := r.lms.client.Do(req)
	if err != nil {
		return textResponse(http.StatusBadGateway, fmt.Sprintf("relay: LMS at %s: %v", r.lms.addr, err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxLMSResponse+1))
	if err != nil {
		return textResponse(http.StatusBadGateway, fmt.Sprintf("relay: LMS at %s: reading the answer: %v", r.lms.addr, err))
	}
	if len(b) > maxLMSResponse {
		return textResponse(http.StatusBadGateway, fmt.Sprintf("relay: LMS at %s: answer larger than %d bytes", r.lms.addr, maxLMSResponse))
	}
	return relayResponse{status: resp.StatusCode, header: forwardHeader(resp.Header), body: b}
}
