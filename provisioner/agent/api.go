package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Channel binding (agent-design.md §4): both ends derive the same 32 bytes
// from the TLS 1.3 session and prove with the site token that they hold
// it, so neither needs the other's certificate. A man in the middle has a
// different session on each side and cannot answer for either without
// the token.
const (
	ekmLabel      = "EXPORTER-branchbox-agent"
	ekmLength     = 32
	proofHeader   = "Branchbox-Server-Proof"
	authScheme    = "Branchbox-Agent"
	relayProtocol = "branchbox-relay/1"

	// DefaultServerPort is branchbox's agent listener (provisioner.agent_listen).
	DefaultServerPort = "9972"
	// MinTokenLength is the server's rule for sites[].agent_token_file.
	MinTokenLength = 20

	maxAPIBody = 1 << 20
)

// API calls branchbox's agent listener for one site. Every call is one
// request on its own TLS connection, because the proof is bound to that
// connection.
type API struct {
	host    string // host:port
	site    string
	token   []byte
	timeout time.Duration
}

// NewAPI checks the server URL (https://HOST[:PORT], port 9972 by default),
// the site name and the token file.
func NewAPI(server, site, tokenFile string, timeout time.Duration) (*API, error) {
	host, err := parseServer(server)
	if err != nil {
		return nil, err
	}
	if err := validSite(site); err != nil {
		return nil, err
	}
	token, err := LoadToken(tokenFile)
	if err != nil {
		return nil, err
	}
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	return &API{host: host, site: site, token: token, timeout: timeout}, nil
}

func parseServer(s string) (string, error) {
	if s == "" {
		return "", errors.New("--server: required (https://HOST[:PORT])")
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("--server %q: %w", s, err)
	}
	if u.Scheme != "https" {
		return "", fmt.Errorf("--server %q: scheme must be https (the agent listener is TLS only)", s)
	}
	if u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("--server %q: want https://HOST[:PORT] and nothing else", s)
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), DefaultServerPort), nil
	}
	return u.Host, nil
}

// validSite keeps the name safe inside the quoted Authorization parameter.
func validSite(site string) error {
	if site == "" {
		return errors.New("--site: required")
	}
	for _, r := range site {
		if r < 0x21 || r > 0x7e || r == '"' || r == '\\' {
			return fmt.Errorf("--site %q: only printable ASCII without spaces, quotes or backslashes", site)
		}
	}
	return nil
}

// LoadToken reads a site token file; surrounding whitespace is not part of
// the token (the server trims the same way). The error never shows it.
func LoadToken(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("--token-file: required")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--token-file: %w", err)
	}
	t := bytes.TrimSpace(b)
	if len(t) < MinTokenLength {
		return nil, fmt.Errorf("--token-file %s: token is %d characters, at least %d needed", path, len(t), MinTokenLength)
	}
	return t, nil
}

func proof(token []byte, role string, ekm []byte) string {
	m := hmac.New(sha256.New, token)
	m.Write([]byte(role))
	m.Write(ekm)
	return hex.EncodeToString(m.Sum(nil))
}

// ServerProofError is a response without a valid server proof: the peer
// is not branchbox holding this site's token (or it refused our proof and
// so sent none). Nothing in such a response is acted on.
type ServerProofError struct {
	Status int
}

func (e *ServerProofError) Error() string {
	return fmt.Sprintf("server did not prove it holds the site token (HTTP %d without a valid %s header) — "+
		"check --site and --token-file, and that --server is branchbox's agent listener", e.Status, proofHeader)
}

// APIError is an authenticated error answer: the server's {"error": ...}.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("server: HTTP %d: %s", e.Status, e.Message)
}

// exchange is one verified response and the connection it came on. All
// reading goes through budget, so the relay can bound each request.
type exchange struct {
	conn   *tls.Conn
	br     *bufio.Reader
	budget *budget
	resp   *http.Response
}

// send dials, binds the request to the new TLS session and checks the
// server's proof before anything in the response is used.
func (a *API) send(ctx context.Context, method, path string, hdr http.Header, body []byte) (*exchange, error) {
	d := net.Dialer{Timeout: a.timeout}
	raw, err := d.DialContext(ctx, "tcp", a.host)
	if err != nil {
		return nil, fmt.Errorf("server %s: %w", a.host, err)
	}
	host, _, _ := net.SplitHostPort(a.host)
	conn := tls.Client(raw, &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		ServerName: host,
		NextProtos: []string{"http/1.1"},
		// The certificate is self-signed and never distributed; the
		// server proves itself with the site token over this session's
		// exported keying material instead (checked below).
		InsecureSkipVerify: true, //nolint:gosec // channel binding authenticates the server
	})
	ok := false
	defer func() {
		if !ok {
			conn.Close()
		}
	}()
	if err := conn.SetDeadline(time.Now().Add(a.timeout)); err != nil {
		return nil, err
	}
	if err := conn.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("server %s: TLS 1.3 handshake: %w", a.host, err)
	}
	cs := conn.ConnectionState()
	ekm, err := cs.ExportKeyingMaterial(ekmLabel, nil, ekmLength)
	if err != nil {
		return nil, fmt.Errorf("server %s: exporting keying material: %w", a.host, err)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+a.host+path, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("server %s: %w", a.host, err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", fmt.Sprintf(`%s site="%s", proof="%s"`, authScheme, a.site, proof(a.token, "agent", ekm)))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if err := req.Write(conn); err != nil {
		return nil, fmt.Errorf("server %s: writing %s %s: %w", a.host, method, path, err)
	}
	bud := &budget{r: conn, left: maxAPIBody + maxHeaderBytes}
	br := bufio.NewReader(bud)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, fmt.Errorf("server %s: reading the answer to %s %s: %w", a.host, method, path, err)
	}
	got, err := hex.DecodeString(resp.Header.Get(proofHeader))
	want, _ := hex.DecodeString(proof(a.token, "server", ekm))
	if err != nil || !hmac.Equal(got, want) {
		return nil, &ServerProofError{Status: resp.StatusCode}
	}
	ok = true
	return &exchange{conn: conn, br: br, budget: bud, resp: resp}, nil
}

// call is one JSON request expecting status want.
func (a *API) call(ctx context.Context, method, path string, in, out any, want int) error {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = b
	}
	ex, err := a.send(ctx, method, path, http.Header{"Connection": {"close"}}, body)
	if err != nil {
		return err
	}
	defer ex.conn.Close()
	b, err := readBody(ex.resp)
	if err != nil {
		return fmt.Errorf("server %s: %s %s: %w", a.host, method, path, err)
	}
	if ex.resp.StatusCode != want {
		return apiError(ex.resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("server %s: %s %s: decoding the answer: %w", a.host, method, path, err)
	}
	return nil
}

func readBody(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAPIBody+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxAPIBody {
		return nil, fmt.Errorf("answer larger than %d bytes", maxAPIBody)
	}
	return b, nil
}

func apiError(status int, body []byte) error {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(body))
		if len(e.Error) > 200 {
			e.Error = e.Error[:200] + "…"
		}
		if e.Error == "" {
			e.Error = http.StatusText(status)
		}
	}
	return &APIError{Status: status, Message: e.Error}
}

// Registration is what POST /agent/v1/register hands over once. The OTP
// is a secret: it goes to the firmware and the registration file, never
// to output or logs.
type Registration struct {
	UUID    string    `json:"uuid"`
	Site    string    `json:"site"`
	Domain  string    `json:"domain"`
	OTP     string    `json:"otp"`
	Expires time.Time `json:"expires"`
}

// Register sends the device's info and receives its site, domain and OTP.
func (a *API) Register(ctx context.Context, info Info) (Registration, error) {
	var r Registration
	if err := a.call(ctx, http.MethodPost, "/agent/v1/register", info, &r, http.StatusCreated); err != nil {
		return Registration{}, err
	}
	return r, nil
}

// DeviceStatus is GET /agent/v1/devices/{uuid}.
type DeviceStatus struct {
	UUID      string    `json:"uuid"`
	Site      string    `json:"site"`
	State     string    `json:"state"`
	LastError string    `json:"last_error"`
	Updated   time.Time `json:"updated"`
}

// Device reads the server's record of one device of this site.
func (a *API) Device(ctx context.Context, uuid string) (DeviceStatus, error) {
	var d DeviceStatus
	if err := a.call(ctx, http.MethodGet, "/agent/v1/devices/"+url.PathEscape(uuid), nil, &d, http.StatusOK); err != nil {
		return DeviceStatus{}, err
	}
	return d, nil
}

// activateRequest is POST /agent/v1/activate's body.
type activateRequest struct {
	Mode string `json:"mode"`
	Info Info   `json:"info"`
}

// openRelay asks for host-based activation; on 101 the connection becomes
// the relay, its reader holding whatever the server already sent on it.
func (a *API) openRelay(ctx context.Context, info Info) (*exchange, error) {
	body, err := json.Marshal(activateRequest{Mode: "acm", Info: info})
	if err != nil {
		return nil, err
	}
	hdr := http.Header{"Connection": {"Upgrade"}, "Upgrade": {relayProtocol}}
	ex, err := a.send(ctx, http.MethodPost, "/agent/v1/activate", hdr, body)
	if err != nil {
		return nil, err
	}
	if ex.resp.StatusCode != http.StatusSwitchingProtocols {
		defer ex.conn.Close()
		b, err := readBody(ex.resp)
		if err != nil {
			return nil, fmt.Errorf("server %s: activate: %w", a.host, err)
		}
		return nil, apiError(ex.resp.StatusCode, b)
	}
	if !strings.EqualFold(ex.resp.Header.Get("Upgrade"), relayProtocol) {
		ex.conn.Close()
		return nil, fmt.Errorf("server %s: 101 switches to %q, want %q", a.host, ex.resp.Header.Get("Upgrade"), relayProtocol)
	}
	return ex, nil
}
