package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/branchbox/branchbox/provisioner/agent"
	"github.com/branchbox/branchbox/provisioner/agent/agenttest"
	"github.com/branchbox/branchbox/provisioner/wsman"
)

const (
	site      = "branch-7"
	token     = "site-token-0123456789-abcdef"
	testOTP   = "OTP7K2M9Q4X8W3Z1"
	adminPass = "New-Admin-Pw-55"
)

// logBuf collects the agent's log lines for secret checks.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type rig struct {
	dev  *agenttest.PTHI
	srv  *agenttest.Server
	lms  *agenttest.LMS
	ag   *agent.Agent
	url  string
	logs *logBuf
	tok  string // token file
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{dev: agenttest.NewPTHI(), logs: &logBuf{}}
	r.srv = &agenttest.Server{Site: site, Token: token, OTP: testOTP, Domain: "branch.example.com",
		Expires: time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)}
	r.url = r.srv.Start(t)
	r.lms = agenttest.NewLMS(r.dev.Password, adminPass)
	r.tok = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(r.tok, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.ag = &agent.Agent{
		MEI:      "unix:" + r.dev.Serve(t),
		LMS:      r.lms.Serve(t, true),
		StateDir: filepath.Join(t.TempDir(), "state"),
		Timeout:  5 * time.Second,
		Log:      slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),

		PollInterval: 10 * time.Millisecond,
	}
	t.Cleanup(func() {
		if s := r.logs.String(); strings.Contains(s, testOTP) || strings.Contains(s, r.dev.Password) || strings.Contains(s, token) {
			t.Errorf("a secret is in the log:\n%s", s)
		}
	})
	return r
}

func (r *rig) api(t *testing.T) *agent.API {
	t.Helper()
	a, err := agent.NewAPI(r.url, site, r.tok, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestInfo(t *testing.T) {
	r := newRig(t)
	info, err := r.ag.Info()
	if err != nil {
		t.Fatal(err)
	}
	want := agent.Info{
		UUID: "12345678-9abc-def0-1122-334455667788", AMTVersion: "16.1.25", Build: "2049", SKU: "16392",
		State: "pre-provisioning", ControlMode: "none", DNSSuffix: "branch.example.com",
		Hashes: []agent.Hash{
			{Name: "Example Root 1", Algorithm: "SHA256", Hash: "b55d12476549b20a39e27bac39c0841b21f448de861f8a4d570dc0d04bb53242", Active: true, Default: true},
			{Name: "Example Root 2", Algorithm: "SHA1", Hash: "f7f776e487dad460bc8dc1c64ed71d9c078fcb00"},
		},
		MAC: "02:42:ac:11:00:05", IP: "10.1.0.5",
	}
	if !reflect.DeepEqual(info, want) {
		t.Fatalf("got  %+v\nwant %+v", info, want)
	}
	// The JSON names are the contract with amtsim's status and the server.
	b, _ := json.Marshal(info)
	var m map[string]json.RawMessage
	json.Unmarshal(b, &m)
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if got := strings.Join(keys, ","); got != "amt_version,build,control_mode,dns_suffix,hashes,ip,mac,sku,state,uuid" {
		t.Fatalf("keys %s", got)
	}
	var h []map[string]any
	json.Unmarshal(m["hashes"], &h)
	if len(h) != 2 || len(h[0]) != 5 || h[0]["active"] != true || h[0]["default"] != true || h[0]["algorithm"] != "SHA256" {
		t.Fatalf("hashes %s", m["hashes"])
	}
}

func TestRegister(t *testing.T) {
	r := newRig(t)
	reg, err := r.ag.Register(context.Background(), r.api(t))
	if err != nil {
		t.Fatal(err)
	}
	if reg.Site != site || reg.OTP != testOTP || reg.Domain != "branch.example.com" || !reg.Expires.Equal(r.srv.Expires) {
		t.Fatalf("registration %+v", reg)
	}
	path := filepath.Join(r.ag.StateDir, "registration.json")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("registration file mode %v", fi.Mode())
	}
	if di, _ := os.Stat(r.ag.StateDir); di.Mode().Perm() != 0o700 {
		t.Fatalf("state dir mode %v", di.Mode())
	}
	var saved map[string]any
	b, _ := os.ReadFile(path)
	json.Unmarshal(b, &saved)
	if saved["otp"] != testOTP || saved["uuid"] != r.dev.UUID || saved["site"] != site {
		t.Fatalf("saved %s", b)
	}
	if entries, _ := os.ReadDir(r.ag.StateDir); len(entries) != 1 {
		t.Fatalf("state dir holds %d files, want only registration.json", len(entries))
	}
	registered, _, auth, _ := r.srv.Snapshot()
	if len(registered) != 1 || registered[0]["uuid"] != r.dev.UUID || len(registered[0]["hashes"].([]any)) != 2 {
		t.Fatalf("server saw %v", registered)
	}
	if len(auth) != 1 || !auth[0] {
		t.Fatalf("auth %v", auth)
	}
	got, err := r.ag.LoadRegistration()
	if err != nil || got.OTP != testOTP {
		t.Fatalf("load %+v, %v", got, err)
	}
}

func TestServerAuthentication(t *testing.T) {
	tests := []struct {
		name       string
		proofToken string // server proves with this
		agentToken string // agent holds this
		status     int
	}{
		// An impostor without the token: it answers 201 with an OTP, but
		// its proof is wrong, so the agent must use none of it.
		{"server proof wrong", "not-the-site-token-at-all-x", token, 201},
		// The agent's token is wrong: the real server answers 401 without a proof.
		{"agent token wrong", "", "wrong-token-0123456789-zzzz", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			r.srv.ProofToken = tt.proofToken
			os.WriteFile(r.tok, []byte(tt.agentToken), 0o600)
			_, err := r.ag.Register(context.Background(), r.api(t))
			var pe *agent.ServerProofError
			if !errors.As(err, &pe) || pe.Status != tt.status || !strings.Contains(err.Error(), "server did not prove it holds the site token") {
				t.Fatalf("got %v", err)
			}
			if _, err := os.Stat(filepath.Join(r.ag.StateDir, "registration.json")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("registration written from an unauthenticated answer: %v", err)
			}
		})
	}
}

func TestRegisterErrors(t *testing.T) {
	r := newRig(t)
	r.srv.RegisterError = "root-hash: the site's provisioning root is not among the device's active hashes"
	_, err := r.ag.Register(context.Background(), r.api(t))
	var ae *agent.APIError
	if !errors.As(err, &ae) || ae.Status != 409 || !strings.Contains(err.Error(), "server: HTTP 409: root-hash: the site's") {
		t.Fatalf("got %v", err)
	}
	for _, tt := range []struct{ server, site, token, want string }{
		{"http://x", site, r.tok, "scheme must be https"},
		{"https://x/path", site, r.tok, "want https://HOST[:PORT]"},
		{"", site, r.tok, "--server: required"},
		{r.url, "", r.tok, "--site: required"},
		{r.url, `a"b`, r.tok, "--site"},
		{r.url, site, "", "--token-file: required"},
		{r.url, site, "/nonexistent/token", "--token-file: open /nonexistent/token"},
	} {
		if _, err := agent.NewAPI(tt.server, tt.site, tt.token, time.Second); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewAPI(%q, %q, %q) = %v, want %q", tt.server, tt.site, tt.token, err, tt.want)
		}
	}
	short := filepath.Join(t.TempDir(), "short")
	os.WriteFile(short, []byte("  tooshort-secret \n"), 0o600)
	if _, err := agent.NewAPI(r.url, site, short, time.Second); err == nil ||
		!strings.Contains(err.Error(), "token is 15 characters, at least 20") || strings.Contains(err.Error(), "tooshort-secret") {
		t.Fatalf("short token: %v", err)
	}
}

func TestStart(t *testing.T) {
	r := newRig(t)
	if _, err := r.ag.Register(context.Background(), r.api(t)); err != nil {
		t.Fatal(err)
	}
	reg, err := r.ag.LoadRegistration()
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.ag.Start(reg.OTP, reg.UUID)
	if err != nil {
		t.Fatal(err)
	}
	if res.State != "in-provisioning" || res.UUID != r.dev.UUID {
		t.Fatalf("start %+v", res)
	}
	r.dev.Lock()
	if r.dev.OTP != testOTP || r.dev.State != 1 {
		t.Fatalf("device otp %q state %d", r.dev.OTP, r.dev.State)
	}
	r.dev.Unlock()
	stop, err := r.ag.Stop()
	if err != nil || stop.State != "pre-provisioning" {
		t.Fatalf("stop %+v, %v", stop, err)
	}
	if _, err := r.ag.Start(reg.OTP, "aaaaaaaa-0000-0000-0000-000000000000"); err == nil || !strings.Contains(err.Error(), "the registration is for device aaaaaaaa") {
		t.Fatalf("wrong device: %v", err)
	}
	r.dev.Lock()
	r.dev.State = 2
	r.dev.Unlock()
	if _, err := r.ag.Start(reg.OTP, ""); err == nil || !strings.Contains(err.Error(), "already post-provisioning") {
		t.Fatalf("post-provisioning: %v", err)
	}
	r.ag.Now = func() time.Time { return reg.Expires.Add(time.Second) }
	if _, err := r.ag.LoadRegistration(); err == nil || !strings.Contains(err.Error(), "expired at") {
		t.Fatalf("expired: %v", err)
	}
}

func TestWait(t *testing.T) {
	tests := []struct {
		name   string
		states []string
		want   string // state, or "error: ..."
	}{
		{"activated after unknown and seen", []string{"", "", "seen", "activating", "activated"}, "activated"},
		{"failed", []string{"seen", "failed"}, "failed"},
		// An old failure is the baseline; only a change counts.
		{"stale failure then activated", []string{"failed", "failed", "failed", "activating", "activated"}, "activated"},
		{"timeout", []string{"seen"}, `error: not activated within 200ms (server state "seen")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			r.srv.States = tt.states
			api := r.api(t)
			base, err := r.ag.Baseline(context.Background(), api, r.dev.UUID)
			if err != nil {
				t.Fatal(err)
			}
			st, err := r.ag.Wait(context.Background(), api, r.dev.UUID, base, 200*time.Millisecond)
			if e, ok := strings.CutPrefix(tt.want, "error: "); ok {
				if err == nil || !strings.Contains(err.Error(), e) {
					t.Fatalf("got %+v, %v; want %q", st, err, e)
				}
				return
			}
			if err != nil || st.State != tt.want {
				t.Fatalf("got %+v, %v", st, err)
			}
		})
	}
}

// wsmanBody stands in for a SOAP envelope.
const wsmanBody = `<a:Envelope><a:Body><g:AdminSetup_INPUT/></a:Body></a:Envelope>`

func soap() http.Header {
	return http.Header{"Content-Type": {"application/soap+xml; charset=utf-8"}}
}

func TestActivateRelay(t *testing.T) {
	r := newRig(t)
	r.dev.State = 1 // window open: the agent must close it first
	var transcript bytes.Buffer
	r.srv.Relay = func(rc *agenttest.RelayConn) error {
		step := func(name string, want int, method, path string, hdr http.Header) (*http.Response, error) {
			resp, body, err := rc.Do(method, path, hdr, []byte(wsmanBody))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			fmt.Fprintf(&transcript, "%s %d %v %s\n", name, resp.StatusCode, resp.Header, body)
			if resp.StatusCode != want {
				return nil, fmt.Errorf("%s: status %d, want %d: %s", name, resp.StatusCode, want, body)
			}
			return resp, nil
		}
		// As $$OsAdmin, twice (the second reuses the challenge); whatever
		// Authorization the server sends is dropped.
		for i := range 2 {
			h := soap()
			h.Set("Branchbox-Relay-Auth", "osadmin")
			h.Set("Authorization", "Digest username=\"evil\"")
			if _, err := step(fmt.Sprintf("osadmin-%d", i), 200, "POST", "/wsman", h); err != nil {
				return err
			}
		}
		// As admin with the server's own digest: the 401 comes back whole.
		resp, err := step("admin-challenge", 401, "POST", "/wsman", soap())
		if err != nil {
			return err
		}
		d := wsman.NewDigestAuth("admin", adminPass)
		if err := d.Challenge(resp.Header.Get("WWW-Authenticate")); err != nil {
			return err
		}
		h := soap()
		h.Set("Authorization", d.Authorization("POST", "/wsman"))
		if _, err := step("admin", 200, "POST", "/wsman", h); err != nil {
			return err
		}
		if _, err := step("unknown path", 404, "POST", "/other", nil); err != nil {
			return err
		}
		if _, err := step("wrong method", 405, "GET", "/wsman", nil); err != nil {
			return err
		}
		bad := soap()
		bad.Set("Branchbox-Relay-Auth", "root")
		if _, err := step("unknown auth mode", 400, "POST", "/wsman", bad); err != nil {
			return err
		}
		return rc.PostResult(r.dev.UUID, "acm", "verify", "")
	}
	res, err := r.ag.Activate(context.Background(), r.api(t))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Activated() || res.UUID != r.dev.UUID || res.Step != "verify" {
		t.Fatalf("result %+v", res)
	}
	_, activated, auth, relayErr := r.srv.Snapshot()
	if relayErr != nil {
		t.Fatalf("server side: %v\n%s", relayErr, transcript.String())
	}
	if len(activated) != 1 || activated[0]["info"].(map[string]any)["state"] != "pre-provisioning" {
		t.Fatalf("activate request %v", activated)
	}
	if len(auth) != 1 || !auth[0] {
		t.Fatalf("auth %v", auth)
	}
	r.dev.Lock()
	if r.dev.State != 0 || !contains(r.dev.Seen, 0x0400005E) || !contains(r.dev.Seen, 0x04000067) {
		t.Fatalf("device state %d, commands %x", r.dev.State, r.dev.Seen)
	}
	r.dev.Unlock()

	var users []string
	challenges := 0
	for _, q := range r.lms.Seen() {
		users = append(users, q.User)
		if q.User == "" {
			challenges++
		}
		if strings.Contains(q.Authorization, "evil") {
			t.Errorf("the server's Authorization reached LMS in osadmin mode: %q", q.Authorization)
		}
		if q.Header.Get("Branchbox-Relay-Auth") != "" {
			t.Errorf("Branchbox-Relay-Auth forwarded to LMS")
		}
		if q.Body != wsmanBody || q.Header.Get("Content-Type") != "application/soap+xml; charset=utf-8" {
			t.Errorf("LMS got body %q type %q", q.Body, q.Header.Get("Content-Type"))
		}
	}
	// osadmin: challenge + answer, then the cached challenge; admin: the
	// server's unauthenticated try, then its digest.
	if got := strings.Join(users, ","); got != ",$$OsAdmin,$$OsAdmin,,admin" {
		t.Fatalf("LMS users %q", got)
	}
	if strings.Contains(transcript.String(), r.dev.Password) {
		t.Fatal("the $$OsAdmin password reached the server")
	}
	if !strings.Contains(transcript.String(), "<user>$$OsAdmin</user>") || !strings.Contains(transcript.String(), "<user>admin</user>") {
		t.Fatalf("transcript:\n%s", transcript.String())
	}
}

func contains(s []uint32, v uint32) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestActivateOutcomes(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*rig)
		relay func(*rig, *agenttest.RelayConn) error
		want  string // error substring, or "result: ..." for a result check
	}{
		{"firmware refused", nil, func(r *rig, rc *agenttest.RelayConn) error {
			return rc.PostResult(r.dev.UUID, "none", "add-cert-chain", "AddNextCertInChain: 4 CertVerifyFailed")
		}, "result: not activated"},
		{"result for another device", nil, func(r *rig, rc *agenttest.RelayConn) error {
			return rc.PostResult("aaaaaaaa-0000-0000-0000-000000000000", "acm", "verify", "")
		}, `the server's result is for device "aaaaaaaa-0000-0000-0000-000000000000"`},
		{"post-provisioning", func(r *rig) { r.dev.State, r.dev.Mode = 2, 2 }, nil,
			"is post-provisioning (control mode acm); host-based activation needs pre-provisioning"},
		{"server refuses", func(r *rig) { r.srv.ActivateError = "root-hash: not active on the device" }, nil,
			"server: HTTP 409: root-hash: not active on the device"},
		{"impostor 101", func(r *rig) { r.srv.ProofToken = "impostor-token-0123456789xyz" }, func(r *rig, rc *agenttest.RelayConn) error {
			_, _, err := rc.Do("POST", "/wsman", http.Header{"Branchbox-Relay-Auth": {"osadmin"}}, []byte(wsmanBody))
			if err == nil {
				return errors.New("the agent relayed for an impostor")
			}
			return nil
		}, "HTTP 101 without a valid Branchbox-Server-Proof"},
		{"lms down", func(r *rig) { r.ag.LMS = "unix:/nonexistent/lms" }, nil, "LMS at unix:/nonexistent/lms unreachable"},
		{"closed without result", nil, func(*rig, *agenttest.RelayConn) error { return nil },
			"the server closed the connection before sending its result"},
		{"oversized request", nil, func(r *rig, rc *agenttest.RelayConn) error {
			rc.Write([]byte("POST /wsman HTTP/1.1\r\nHost: agent\r\nContent-Length: 2000000\r\n\r\n"))
			resp, _, err := rc.ReadResponse()
			if err != nil || resp.StatusCode != 413 {
				return fmt.Errorf("want 413, got %v %v", resp, err)
			}
			return nil
		}, "request larger than 1048576 bytes"},
		{"oversized header", nil, func(r *rig, rc *agenttest.RelayConn) error {
			rc.Write([]byte("POST /wsman HTTP/1.1\r\nX: " + strings.Repeat("a", 2<<20) + "\r\n\r\n"))
			return nil
		}, "request larger than 1048576 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			if tt.setup != nil {
				tt.setup(r)
			}
			if tt.relay != nil {
				r.srv.Relay = func(rc *agenttest.RelayConn) error { return tt.relay(r, rc) }
			}
			res, err := r.ag.Activate(context.Background(), r.api(t))
			if tt.want == "result: not activated" {
				if err != nil || res.Activated() || res.Error == "" {
					t.Fatalf("got %+v, %v", res, err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %+v, %v; want %q", res, err, tt.want)
			}
			_, activated, _, relayErr := r.srv.Snapshot()
			if relayErr != nil {
				t.Fatalf("server side: %v", relayErr)
			}
			if (tt.name == "post-provisioning" || tt.name == "lms down") && len(activated) != 0 {
				t.Fatal("the server was asked although the agent knew better")
			}
		})
	}
}
