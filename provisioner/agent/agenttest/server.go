package agenttest

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server is a stand-in for branchbox's agent listener (provisioner/agentapi
// is the real one): TLS 1.3, the channel-binding check of agent-design.md
// §4 on every request, a server proof on every answer.
type Server struct {
	Site  string
	Token string

	// ProofToken, when set, is used for the server's proof instead of
	// Token — an impostor that does not hold the site token.
	ProofToken string

	// Register's answer.
	OTP     string
	Domain  string
	Expires time.Time
	// RegisterError, when set, is answered with status 409 instead.
	RegisterError string

	// States are the successive device states GET /agent/v1/devices/{uuid}
	// answers; the last repeats.
	States []string

	// ActivateError, when set, refuses the upgrade with 409.
	ActivateError string
	// Relay drives the relay after the 101; the connection closes when it
	// returns.
	Relay func(*RelayConn) error

	mu         sync.Mutex
	Registered []map[string]any
	Activated  []map[string]any
	RelayErr   error
	polls      int
	Auth       []bool // per request: did the agent's proof check out
}

// Start serves until the test ends and returns https://host:port.
func (s *Server) Start(t testing.TB) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(s.handle))
	srv.TLS = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{selfSigned(t)},
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

func selfSigned(t testing.TB) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "branchbox agent listener (test)"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func mac(token, role string, ekm []byte) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte(role))
	m.Write(ekm)
	return hex.EncodeToString(m.Sum(nil))
}

var authRE = regexp.MustCompile(`^Branchbox-Agent site="([^"]*)", proof="([0-9a-f]*)"$`)

// authenticate checks the agent's proof and returns the server's.
func (s *Server) authenticate(r *http.Request) (string, bool) {
	if r.TLS == nil || r.TLS.Version != tls.VersionTLS13 {
		return "", false
	}
	ekm, err := r.TLS.ExportKeyingMaterial("EXPORTER-branchbox-agent", nil, 32)
	if err != nil {
		return "", false
	}
	m := authRE.FindStringSubmatch(r.Header.Get("Authorization"))
	ok := m != nil && m[1] == s.Site && hmac.Equal([]byte(m[2]), []byte(mac(s.Token, "agent", ekm)))
	tok := s.Token
	if s.ProofToken != "" {
		tok = s.ProofToken
	}
	return mac(tok, "server", ekm), ok
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	serverProof, ok := s.authenticate(r)
	s.mu.Lock()
	s.Auth = append(s.Auth, ok)
	s.mu.Unlock()
	if !ok {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "agent authentication failed"})
		return
	}
	w.Header().Set("Branchbox-Server-Proof", serverProof)
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/agent/v1/register":
		var info map[string]any
		if err := json.Unmarshal(body, &info); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body: " + err.Error()})
			return
		}
		s.mu.Lock()
		s.Registered = append(s.Registered, info)
		s.mu.Unlock()
		if s.RegisterError != "" {
			writeJSON(w, http.StatusConflict, map[string]string{"error": s.RegisterError})
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusCreated, map[string]any{"uuid": info["uuid"], "site": s.Site, "domain": s.Domain, "otp": s.OTP, "expires": s.Expires})
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/agent/v1/devices/"):
		s.mu.Lock()
		i := min(s.polls, len(s.States)-1)
		s.polls++
		s.mu.Unlock()
		if i < 0 || s.States[i] == "" {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such device"})
			return
		}
		// The record changes only when the state does.
		since := i
		for since > 0 && s.States[since-1] == s.States[i] {
			since--
		}
		writeJSON(w, http.StatusOK, map[string]any{"uuid": strings.TrimPrefix(r.URL.Path, "/agent/v1/devices/"),
			"site": s.Site, "state": s.States[i], "last_error": "", "updated": time.Unix(int64(1000+since), 0).UTC()})
	case r.Method == http.MethodPost && r.URL.Path == "/agent/v1/activate":
		s.activate(w, r, body, serverProof)
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such endpoint"})
	}
}

func (s *Server) activate(w http.ResponseWriter, r *http.Request, body []byte, serverProof string) {
	var req map[string]any
	if err := json.Unmarshal(body, &req); err != nil || req["mode"] != "acm" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "mode: want acm"})
		return
	}
	s.mu.Lock()
	s.Activated = append(s.Activated, req)
	s.mu.Unlock()
	if s.ActivateError != "" {
		writeJSON(w, http.StatusConflict, map[string]string{"error": s.ActivateError})
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), "branchbox-relay/1") {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "Upgrade: want branchbox-relay/1"})
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: branchbox-relay/1\r\nConnection: Upgrade\r\nBranchbox-Server-Proof: %s\r\n\r\n", serverProof)
	if err := brw.Flush(); err != nil {
		return
	}
	if s.Relay == nil {
		return
	}
	err = s.Relay(&RelayConn{conn: conn, br: brw.Reader})
	s.mu.Lock()
	s.RelayErr = err
	s.mu.Unlock()
}

// RelayConn is the server's end of a relay: it writes requests and reads
// the agent's answers, in order.
type RelayConn struct {
	conn net.Conn
	br   *bufio.Reader
}

// Do sends one request and reads the agent's answer whole.
func (c *RelayConn) Do(method, path string, hdr http.Header, body []byte) (*http.Response, []byte, error) {
	req, err := http.NewRequest(method, "http://agent"+path, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	if err := req.Write(c.conn); err != nil {
		return nil, nil, err
	}
	resp, err := http.ReadResponse(c.br, req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// Write sends raw bytes (for malformed or oversized requests).
func (c *RelayConn) Write(b []byte) error {
	_, err := c.conn.Write(b)
	return err
}

// ReadResponse reads one answer after Write.
func (c *RelayConn) ReadResponse() (*http.Response, []byte, error) {
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// PostResult sends the final word.
func (c *RelayConn) PostResult(uuid, controlMode, step, errText string) error {
	b, _ := json.Marshal(map[string]string{"uuid": uuid, "state": "post-provisioning", "control_mode": controlMode, "step": step, "error": errText})
	resp, _, err := c.Do(http.MethodPost, "/branchbox/v1/result", http.Header{"Content-Type": {"application/json"}}, b)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("result: agent answered %d", resp.StatusCode)
	}
	return nil
}

// Snapshot copies what the server recorded.
func (s *Server) Snapshot() (registered, activated []map[string]any, auth []bool, relayErr error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.Registered...), append([]map[string]any(nil), s.Activated...),
		append([]bool(nil), s.Auth...), s.RelayErr
}
