package agentapi

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/provisioner"
	"github.com/branchbox/branchbox/provisioner/democa"
	"github.com/branchbox/branchbox/provisioner/hello"
	"github.com/branchbox/branchbox/provisioner/internal/amtsimtest"
)

// Every secret the tests hand branchbox; none may show up in a log line,
// an audit entry, a device record or an answer (the OTP aside, in the one
// answer that hands it over).
const (
	domain     = "branch1.example.com"
	siteToken  = "site-token-0123456789-abcdefghij"
	otherToken = "other-token-0123456789-abcdefghij"
	adminPass  = "Adm1n-P4ss!word"
	localPass  = "L0cal-0s!Admin"
)

var (
	caOnce sync.Once
	ca     *democa.Chain
	caErr  error
)

func demoCA(t *testing.T) *democa.Chain {
	t.Helper()
	caOnce.Do(func() { ca, caErr = democa.Generate(democa.Options{Domain: domain}) })
	if caErr != nil {
		t.Fatal(caErr)
	}
	return ca
}

// env is a store, a provisioner (hello listener included) and the agent
// listener on a real TLS socket, all logging into one buffer.
type env struct {
	t          *testing.T
	st         *cluster.Store
	prov       *provisioner.Provisioner
	addr       string // agent listener
	roots      *x509.CertPool
	hello      string // hello listener
	devicePort int
	logs       *lockedBuffer
	// answers are every answer body the test's agent read, the
	// registration answers (which hand over the OTP) excepted.
	answers *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c := demoCA(t)
	st := cluster.NewMemory()
	ctx := context.Background()
	seal := func(b []byte) cluster.Sealed {
		s, err := st.Seal(b)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if err := st.Apply(ctx, cluster.PutProfile{Profile: cluster.Profile{Name: "standard", AdminPassword: seal([]byte(adminPass)), TimeSync: true, KVM: true, UserConsent: "kvm"}}); err != nil {
		t.Fatal(err)
	}
	sites := []cluster.Site{
		{Name: "lab", Domain: domain, Subnet: "127.0.0.0/8", Profile: "standard", CertChainPEM: string(c.ChainPEM()), CertKey: seal(c.KeyPEM()),
			AllowTemplate: true, AgentToken: seal([]byte(siteToken))},
		{Name: "other", Domain: "other.example.com", Subnet: "10.9.0.0/24", Profile: "standard", AgentToken: seal([]byte(otherToken))},
		{Name: "closed", Domain: "closed.example.com", Subnet: "10.8.0.0/24", Profile: "standard"},
	}
	for _, s := range sites {
		if err := st.Apply(ctx, cluster.PutSite{Site: s}); err != nil {
			t.Fatal(err)
		}
	}
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := probe.Addr().(*net.TCPAddr).Port
	probe.Close()
	p := provisioner.New(provisioner.Options{
		Store: st, Log: log, NodeID: "test", DevicePort: port, ReadTimeout: 2 * time.Second,
		Session: provisioner.SessionTuning{CommitWait: time.Millisecond, VerifyFor: 2 * time.Second, Backoff: 10 * time.Millisecond, RequestTimeout: 5 * time.Second},
	})
	sctx, cancel := context.WithCancel(context.Background())
	helloLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	ln, err := Listen("127.0.0.1:0", dataDir)
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Options{Store: st, Provisioner: p, Log: log})
	done := make(chan error, 2)
	go func() { done <- p.Serve(sctx, helloLn) }()
	go func() { done <- srv.Serve(sctx, ln) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
	})
	pem, err := os.ReadFile(filepath.Join(dataDir, "agent-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	return &env{t: t, st: st, prov: p, addr: ln.Addr().String(), roots: roots, hello: helloLn.Addr().String(), devicePort: port, logs: logs, answers: &lockedBuffer{}}
}

// agent is the test's own agent client: it binds its proof to the TLS
// session the way the contract says, computing everything itself.
type agent struct {
	e           *env
	site, token string
}

func (e *env) agent(site, token string) *agent { return &agent{e: e, site: site, token: token} }

func hmacHex(key, role string, ekm []byte) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(role))
	m.Write(ekm)
	return hex.EncodeToString(m.Sum(nil))
}

// exchange is one request on a fresh connection and its answer.
type exchange struct {
	resp  *http.Response
	body  []byte
	conn  *tls.Conn
	br    *bufio.Reader
	ekm   []byte
	agent *agent
}

// send writes one request; auth rewrites the Authorization header given
// this connection's keying material ("" sends none).
func (a *agent) send(method, path string, body any, hdr http.Header, auth func(ekm []byte) string) *exchange {
	t := a.e.t
	t.Helper()
	conn, err := tls.Dial("tcp", a.e.addr, &tls.Config{RootCAs: a.e.roots, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	cs := conn.ConnectionState()
	ekm, err := cs.ExportKeyingMaterial("EXPORTER-branchbox-agent", nil, 32)
	if err != nil {
		t.Fatal(err)
	}
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "https://"+a.e.addr+path, rd)
	for k, v := range hdr {
		req.Header[k] = v
	}
	if auth == nil {
		auth = func(ekm []byte) string {
			return fmt.Sprintf(`Branchbox-Agent site="%s", proof="%s"`, a.site, hmacHex(a.token, "agent", ekm))
		}
	}
	if h := auth(ekm); h != "" {
		req.Header.Set("Authorization", h)
	}
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	x := &exchange{resp: resp, conn: conn, br: br, ekm: ekm, agent: a}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		x.body, _ = io.ReadAll(resp.Body)
		conn.Close()
		if path != "/agent/v1/register" || resp.StatusCode != http.StatusCreated {
			a.e.answers.Write(x.body)
		}
	}
	return x
}

func (a *agent) do(method, path string, body any) *exchange {
	a.e.t.Helper()
	x := a.send(method, path, body, nil, nil)
	a.checkServerProof(x)
	return x
}

// checkServerProof is what the agent must do before acting on an answer.
func (a *agent) checkServerProof(x *exchange) {
	a.e.t.Helper()
	if got := x.resp.Header.Get("Branchbox-Server-Proof"); got != hmacHex(a.token, "server", x.ekm) {
		a.e.t.Errorf("server did not prove it holds the site token: header %q", got)
	}
}

func errorOf(t *testing.T, x *exchange) string {
	t.Helper()
	var v struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(x.body, &v); err != nil {
		t.Fatalf("answer %d %q is not {\"error\": ...}", x.resp.StatusCode, x.body)
	}
	return v.Error
}

const uuid1 = "00000000-0000-4000-8000-000000000001"

// info is what the agent would report for an amtsim device of the demo PKI.
func info(t *testing.T) Info {
	return Info{
		UUID: uuid1, AMTVersion: "16.1.25", Build: "3000", SKU: "16392", State: "pre-provisioning", ControlMode: "none",
		DNSSuffix: domain, MAC: "02:00:00:00:00:01", IP: "127.0.0.1",
		Hashes: []Hash{
			{Name: "GoDaddy", Algorithm: "SHA256", Hash: "c3846bf24b9e93ca64274c0ec67c1ecc5e024ffcacd2d74019350e81fe546ae4", Active: true, Default: true},
			{Name: "branchbox demo root", Algorithm: "SHA256", Hash: demoCA(t).RootSHA256(), Active: true},
		},
	}
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	good := e.agent("lab", siteToken)
	cases := []struct {
		name string
		auth func(ekm []byte) string
		code int
		err  string
	}{
		{"valid", nil, http.StatusNotFound, "not known in site"},
		{"no Authorization", func([]byte) string { return "" }, 401, "agent authentication failed"},
		{"wrong token", func(ekm []byte) string {
			return `Branchbox-Agent site="lab", proof="` + hmacHex("not-the-site-token-at-all", "agent", ekm) + `"`
		}, 401, "agent authentication failed"},
		{"another site's token", func(ekm []byte) string {
			return `Branchbox-Agent site="lab", proof="` + hmacHex(otherToken, "agent", ekm) + `"`
		}, 401, "agent authentication failed"},
		{"proof of another connection", func([]byte) string {
			return `Branchbox-Agent site="lab", proof="` + hmacHex(siteToken, "agent", make([]byte, 32)) + `"`
		}, 401, "agent authentication failed"},
		{"the server's proof replayed", func(ekm []byte) string {
			return `Branchbox-Agent site="lab", proof="` + hmacHex(siteToken, "server", ekm) + `"`
		}, 401, "agent authentication failed"},
		{"unknown site", func(ekm []byte) string {
			return `Branchbox-Agent site="nowhere", proof="` + hmacHex(siteToken, "agent", ekm) + `"`
		}, 401, "agent authentication failed"},
		{"site without a token", func(ekm []byte) string {
			return `Branchbox-Agent site="closed", proof="` + hmacHex(siteToken, "agent", ekm) + `"`
		}, 403, `site "closed" accepts no agents (no agent_token_file)`},
		{"bearer scheme", func([]byte) string { return "Bearer " + siteToken }, 401, "agent authentication failed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := good.send(http.MethodGet, "/agent/v1/devices/"+uuid1, nil, nil, c.auth)
			if x.resp.StatusCode != c.code || !strings.Contains(errorOf(t, x), c.err) {
				t.Fatalf("%d %s, want %d %q", x.resp.StatusCode, x.body, c.code, c.err)
			}
			if c.code == 401 || c.code == 403 {
				if x.resp.Header.Get("Branchbox-Server-Proof") != "" {
					t.Error("an unauthenticated caller got a server proof")
				}
				if c.code == 401 && string(bytes.TrimSpace(x.body)) != `{"error":"agent authentication failed"}` && !strings.Contains(string(x.body), `"error": "agent authentication failed"`) {
					t.Errorf("401 body %q hints at what failed", x.body)
				}
			} else {
				good.checkServerProof(x)
			}
		})
	}
	t.Run("TLS 1.2 refused", func(t *testing.T) {
		_, err := tls.Dial("tcp", e.addr, &tls.Config{RootCAs: e.roots, MaxVersion: tls.VersionTLS12})
		if err == nil {
			t.Error("the agent listener accepted TLS 1.2")
		}
	})
	e.noSecrets(nil)
}

func TestRegisterPrechecks(t *testing.T) {
	e := newEnv(t)
	a := e.agent("lab", siteToken)
	ctx := context.Background()
	done := "00000000-0000-4000-8000-000000000009"
	if err := e.st.Apply(ctx, cluster.DeviceUpdate{UUID: done, Site: "lab", State: cluster.DeviceActivated, Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		change func(*Info)
		code   int
		err    string
	}{
		{"root not among the device's hashes", func(i *Info) { i.Hashes = i.Hashes[:1] }, 409, "root-hash: root \"branchbox demo root CA\""},
		{"root hash present but inactive", func(i *Info) { i.Hashes[1].Active = false }, 409, "root-hash:"},
		{"no active hash at all", func(i *Info) { i.Hashes = nil }, 409, "root-hash: device " + uuid1 + " reports no active root hash"},
		{"DNS suffix outside the certificate's domain", func(i *Info) { i.DNSSuffix = "shop.other.org" }, 409, `domain-suffix: the site's certificate "setup.branch1.example.com" is not within the device's DNS suffix "shop.other.org"`},
		{"already activated in the store", func(i *Info) { i.UUID = done }, 409, "is already activated"},
		{"device reports post-provisioning", func(i *Info) { i.State, i.ControlMode = "post-provisioning", "acm" }, 409, "state: device " + uuid1 + " reports post-provisioning"},
		{"bad uuid", func(i *Info) { i.UUID = "nope" }, 400, "uuid:"},
		{"bad state", func(i *Info) { i.State = "ready" }, 400, `state: "ready" is not one of`},
		{"bad hash algorithm", func(i *Info) { i.Hashes[0].Algorithm = "MD5" }, 400, `hashes[0].algorithm: "MD5"`},
		{"short hash", func(i *Info) { i.Hashes[1].Hash = "abcd" }, 400, "hashes[1].hash: not 32 hex-encoded bytes"},
		{"bad ip", func(i *Info) { i.IP = "10.1.0" }, 400, `ip: "10.1.0" is not an IP address`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := info(t)
			c.change(&in)
			x := a.do(http.MethodPost, "/agent/v1/register", in)
			if x.resp.StatusCode != c.code || !strings.Contains(errorOf(t, x), c.err) {
				t.Fatalf("%d %s\nwant %d %q", x.resp.StatusCode, x.body, c.code, c.err)
			}
		})
	}
	if _, ok := e.st.OTP(uuid1); ok {
		t.Error("a refused registration left a one-time password")
	}
}

type registration struct {
	UUID, Site, Domain, OTP string
	Expires                 time.Time
}

func (a *agent) register(t *testing.T, in Info) registration {
	t.Helper()
	x := a.do(http.MethodPost, "/agent/v1/register", in)
	if x.resp.StatusCode != http.StatusCreated {
		t.Fatalf("register: %d %s", x.resp.StatusCode, x.body)
	}
	if cc := x.resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	var reg registration
	if err := json.Unmarshal(x.body, &reg); err != nil {
		t.Fatal(err)
	}
	if reg.UUID != uuid1 || reg.Site != "lab" || reg.Domain != domain || len(reg.OTP) < 8 || reg.Expires.Before(time.Now()) {
		t.Fatalf("registration %+v", reg)
	}
	return reg
}

// sendHello is what amtsim's device sends when StartConfiguration opens
// its window (in these tests amtsim serve is given the OTP on its command
// line, as the agent would have set it over PTHI).
func (e *env) sendHello(t *testing.T) {
	t.Helper()
	u, _ := hello.ParseUUID(uuid1)
	root, _ := hex.DecodeString(demoCA(t).RootSHA256())
	wire, err := hello.Hello{AdminCredentialsSet: true, Version: hello.VersionPKI, UUID: u, Hashes: []hello.Hash{{Alg: hello.SHA256, Sum: root}}}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", e.hello)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write(wire)
	conn.Close()
}

func (e *env) wait(t *testing.T, uuid, state string) cluster.Device {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		d, ok := e.st.Device(uuid)
		if ok && d.State == state {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("device %s is %q (%s), want %s", uuid, d.State, d.LastError, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRegisterThenRemoteConfiguration: the OTP the agent gets is the one
// the out-of-band session reads back from the device.
func TestRegisterThenRemoteConfiguration(t *testing.T) {
	for _, c := range []struct {
		name    string
		wrong   bool
		state   string
		errPart string
	}{
		{name: "OTP set as registered", state: cluster.DeviceActivated},
		{name: "another OTP on the device", wrong: true, state: cluster.DeviceFailed, errPart: "one-time password mismatch"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			a := e.agent("lab", siteToken)
			reg := a.register(t, info(t))
			otp := reg.OTP
			if c.wrong {
				otp = "WRONG" + otp
			}
			amtsimtest.Serve(t, "--listen", "127.0.0.1:"+strconv.Itoa(e.devicePort), "--uuid", uuid1, "--domain", domain,
				"--custom-root-hash", demoCA(t).RootSHA256(), "--otp", otp)
			e.sendHello(t)
			d := e.wait(t, uuid1, c.state)
			if !strings.Contains(d.LastError, c.errPart) {
				t.Errorf("last error %q, want %q", d.LastError, c.errPart)
			}
			x := a.do(http.MethodGet, "/agent/v1/devices/"+uuid1, nil)
			var v deviceView
			if err := json.Unmarshal(x.body, &v); err != nil || x.resp.StatusCode != 200 || v.State != c.state || v.Site != "lab" {
				t.Errorf("device status %d %s", x.resp.StatusCode, x.body)
			}
			// The device is lab's: another site's agent does not see it.
			if x := e.agent("other", otherToken).do(http.MethodGet, "/agent/v1/devices/"+uuid1, nil); x.resp.StatusCode != 404 {
				t.Errorf("another site's agent reads the device: %d %s", x.resp.StatusCode, x.body)
			}
			if c.state == cluster.DeviceActivated {
				// The agent's info is stale; the store knows better.
				if x := a.do(http.MethodPost, "/agent/v1/register", info(t)); x.resp.StatusCode != 409 {
					t.Errorf("registering an activated device again: %d %s", x.resp.StatusCode, x.body)
				}
			}
			e.noSecrets([]string{reg.OTP})
		})
	}
}

// relayLog is what the test's relay saw of the server's requests.
type relayLog struct {
	osadmin, admin int // /wsman requests by login
	serverAuth     int // osadmin requests that carried the server's own Authorization
	notFound       int
	result         *Result
}

// relayTo plays the agent's side of the upgraded connection: each /wsman
// request goes to amtsim's host-side endpoint on a connection of its own,
// answered there as $$OsAdmin when the server asks for it; the result ends
// the relay.
func relayTo(t *testing.T, x *exchange, lms string) relayLog {
	t.Helper()
	var log relayLog
	lmsClient := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	x.conn.SetDeadline(time.Now().Add(2 * time.Minute))
	defer x.conn.Close()
	for {
		req, err := http.ReadRequest(x.br)
		if err != nil {
			t.Fatalf("relay: reading the server's request: %v", err)
		}
		body, _ := io.ReadAll(req.Body)
		switch req.URL.Path {
		case "/branchbox/v1/result":
			var res Result
			if err := json.Unmarshal(body, &res); err != nil {
				t.Fatalf("result %q: %v", body, err)
			}
			log.result = &res
			x.agent.e.answers.Write(body)
			(&http.Response{StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1, Close: true}).Write(x.conn)
			return log
		case "/wsman":
		default:
			log.notFound++
			(&http.Response{StatusCode: 404, ProtoMajor: 1, ProtoMinor: 1}).Write(x.conn)
			continue
		}
		osadmin := req.Header.Get("Branchbox-Relay-Auth") == "osadmin"
		forward := func(auth string) *http.Response {
			out, _ := http.NewRequest(http.MethodPost, lms, bytes.NewReader(body))
			out.Header.Set("Content-Type", req.Header.Get("Content-Type"))
			if auth != "" {
				out.Header.Set("Authorization", auth)
			}
			resp, err := lmsClient.Do(out)
			if err != nil {
				t.Fatalf("relay: LMS: %v", err)
			}
			return resp
		}
		var resp *http.Response
		if osadmin {
			log.osadmin++
			if req.Header.Get("Authorization") != "" {
				log.serverAuth++
			}
			resp = forward("")
			if resp.StatusCode == http.StatusUnauthorized {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				resp = forward(digest(resp.Header.Get("WWW-Authenticate"), "$$OsAdmin", localPass))
			}
		} else {
			if strings.Contains(req.Header.Get("Authorization"), `username="admin"`) {
				log.admin++
			}
			resp = forward(req.Header.Get("Authorization"))
		}
		rbody, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// Written back as LMS framed it, "Connection: close" included.
		back := &http.Response{StatusCode: resp.StatusCode, ProtoMajor: 1, ProtoMinor: 1, Header: resp.Header.Clone(),
			Body: io.NopCloser(bytes.NewReader(rbody)), ContentLength: int64(len(rbody)), Close: resp.Close}
		back.Header.Del("Transfer-Encoding")
		if err := back.Write(x.conn); err != nil {
			t.Fatalf("relay: answering: %v", err)
		}
	}
}

// digest answers an RFC 2617 challenge (MD5, qop=auth) for POST /wsman.
func digest(challenge, user, pass string) string {
	p := map[string]string{}
	for _, kv := range strings.Split(strings.TrimPrefix(challenge, "Digest "), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		p[k] = strings.Trim(v, `"`)
	}
	h := func(s string) string { sum := md5.Sum([]byte(s)); return hex.EncodeToString(sum[:]) }
	ha1, ha2 := h(user+":"+p["realm"]+":"+pass), h("POST:/wsman")
	const nc, cnonce = "00000001", "0a4f113b"
	resp := h(ha1 + ":" + p["nonce"] + ":" + nc + ":" + cnonce + ":auth:" + ha2)
	return fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="/wsman", response="%s", qop=auth, nc=%s, cnonce="%s"`,
		user, p["realm"], p["nonce"], resp, nc, cnonce)
}

func (a *agent) activate(t *testing.T, in Info) *exchange {
	t.Helper()
	hdr := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"branchbox-relay/1"}}
	x := a.send(http.MethodPost, "/agent/v1/activate", activateRequest{Mode: "acm", Info: in}, hdr, nil)
	a.checkServerProof(x)
	return x
}

func TestActivateThroughRelay(t *testing.T) {
	for _, c := range []struct {
		name    string
		sim     []string
		tls     bool // the profile wants TLS, checked at info.ip:16993 (amtsim's --listen)
		state   string
		step    string
		errPart string
	}{
		{name: "to admin control mode", sim: []string{"--custom-root-hash", demoCA(t).RootSHA256()}, state: cluster.DeviceActivated, step: "done"},
		{name: "to admin control mode with TLS", sim: []string{"--custom-root-hash", demoCA(t).RootSHA256()}, tls: true, state: cluster.DeviceActivated, step: "done"},
		// The agent's hash list says the root is trusted; the firmware's
		// table does not have it, and says so at the root certificate.
		{name: "root not in the firmware's table", state: cluster.DeviceFailed, step: "cert-chain",
			errPart: `AddNextCertInChain returned 4 (CertVerifyFailed) for certificate 3 of 3, "branchbox demo root CA"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			a := e.agent("lab", siteToken)
			if c.tls {
				prof, _ := e.st.Profile("standard")
				prof.TLS = true
				if err := e.st.Apply(context.Background(), cluster.PutProfile{Profile: prof}); err != nil {
					t.Fatal(err)
				}
			}
			sim := amtsimtest.Serve(t, append([]string{"--listen", "127.0.0.1:" + strconv.Itoa(e.devicePort), "--uuid", uuid1, "--domain", domain, "--setup-mode=false",
				"--local-listen", "127.0.0.1:0", "--local-password", localPass, "--status-listen", "127.0.0.1:0"}, c.sim...)...)
			x := a.activate(t, info(t))
			if x.resp.StatusCode != http.StatusSwitchingProtocols || x.resp.Header.Get("Upgrade") != "branchbox-relay/1" {
				t.Fatalf("activate: %d %s", x.resp.StatusCode, x.body)
			}
			log := relayTo(t, x, sim.Local)
			res := log.result
			t.Logf("relay: %d requests as $$OsAdmin, %d as admin; result %+v", log.osadmin, log.admin, *res)
			if res.UUID != uuid1 || res.State != c.state || res.Step != c.step || !strings.Contains(res.Error, c.errPart) {
				t.Errorf("result %+v, want state %s step %s error %q", *res, c.state, c.step, c.errPart)
			}
			if log.serverAuth != 0 {
				t.Errorf("%d $$OsAdmin requests carried the server's own Authorization", log.serverAuth)
			}
			d := e.wait(t, uuid1, c.state)
			st := sim.DeviceStatus(t)
			if c.state == cluster.DeviceActivated {
				if res.ControlMode != "acm" || log.admin == 0 || st.State != "post-provisioning" || st.ControlMode != "acm" || !st.Features.KVM {
					t.Errorf("control mode %s, %d admin requests, device %+v", res.ControlMode, log.admin, st)
				}
				if d.AMTVersion == "" || d.FQDN == "" {
					t.Errorf("device record %+v", d)
				}
			} else {
				if res.ControlMode != "none" || st.State != "pre-provisioning" || !strings.Contains(d.LastError, "CertVerifyFailed") {
					t.Errorf("control mode %s, device %s, last error %q", res.ControlMode, st.State, d.LastError)
				}
				// Only the agent can relay a host-based session again, so
				// a retry from the API says so instead of dialling a
				// device that never sent a hello.
				err := e.prov.Retry(uuid1, "test")
				if !errors.Is(err, provisioner.ErrNotRetryable) || !strings.Contains(err.Error(), "branchbox-agent activate --acm") {
					t.Errorf("retry of a failed host-based activation: %v", err)
				}
			}
			steps := map[string]bool{}
			for _, en := range e.st.Audit(0) {
				if en.Subject == uuid1 {
					steps[en.Action] = true
				}
			}
			for _, s := range []string{"activation.agent", "activation.general-settings", "activation.host-based-setup"} {
				if !steps[s] {
					t.Errorf("no audit entry %s (have %v)", s, steps)
				}
			}
			if c.state == cluster.DeviceActivated {
				for _, s := range []string{"activation.cert-chain", "activation.admin-setup", "activation.mebx-password", "activation.verify", "activation.kvm", "activation.activated"} {
					if !steps[s] {
						t.Errorf("no audit entry %s (have %v)", s, steps)
					}
				}
				if steps["activation.tls-verify"] != c.tls {
					t.Errorf("TLS checked: %v, profile TLS %v", steps["activation.tls-verify"], c.tls)
				}
			}
			e.noSecrets(nil)
		})
	}
}

func TestActivatePrechecks(t *testing.T) {
	e := newEnv(t)
	a := e.agent("lab", siteToken)
	cases := []struct {
		name   string
		change func(*Info)
		mode   string
		hdr    http.Header
		code   int
		err    string
	}{
		{name: "window open", change: func(i *Info) { i.State = "in-provisioning" }, code: 409, err: "state: device " + uuid1 + " is in-provisioning; host-based activation needs pre-provisioning"},
		{name: "client control mode", change: func(i *Info) { i.ControlMode = "ccm" }, code: 409, err: "control_mode: device " + uuid1 + " is in control mode ccm"},
		{name: "root not trusted", change: func(i *Info) { i.Hashes = i.Hashes[:1] }, code: 409, err: "root-hash:"},
		{name: "client mode requested", mode: "ccm", code: 400, err: `mode: "ccm" is not supported`},
		{name: "bad info", change: func(i *Info) { i.ControlMode = "admin" }, code: 400, err: `info.control_mode: "admin"`},
		{name: "no upgrade", hdr: http.Header{}, code: 426, err: "activate needs Connection: Upgrade and Upgrade: branchbox-relay/1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := info(t)
			if c.change != nil {
				c.change(&in)
			}
			mode := "acm"
			if c.mode != "" {
				mode = c.mode
			}
			hdr := http.Header{"Connection": {"keep-alive, Upgrade"}, "Upgrade": {"branchbox-relay/1"}}
			if c.hdr != nil {
				hdr = c.hdr
			}
			x := a.send(http.MethodPost, "/agent/v1/activate", activateRequest{Mode: mode, Info: in}, hdr, nil)
			a.checkServerProof(x)
			if x.resp.StatusCode != c.code || !strings.Contains(errorOf(t, x), c.err) {
				t.Fatalf("%d %s\nwant %d %q", x.resp.StatusCode, x.body, c.code, c.err)
			}
		})
	}
	if _, ok := e.st.Device(uuid1); ok {
		t.Error("a refused activation left a device record")
	}
	// A session elsewhere owns the device.
	if err := e.st.Apply(context.Background(), cluster.DeviceUpdate{UUID: uuid1, Site: "lab", State: cluster.DeviceActivating, Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	x := a.activate(t, info(t))
	if x.resp.StatusCode != 409 || !strings.Contains(errorOf(t, x), "already being activated") {
		t.Errorf("activating a device being activated: %d %s", x.resp.StatusCode, x.body)
	}
	if d, _ := e.st.Device(uuid1); d.State != cluster.DeviceActivating {
		t.Errorf("the other session's device is now %s", d.State)
	}
}

// noSecrets looks for every secret in the logs, the answers the agent
// got (errors included), the audit log and the device records; extra are
// secrets the test learnt (an OTP).
func (e *env) noSecrets(extra []string) {
	e.t.Helper()
	var all strings.Builder
	all.WriteString(e.logs.String())
	all.WriteString(e.answers.String())
	for _, en := range e.st.Audit(0) {
		fmt.Fprintf(&all, "%s %s %s %s\n", en.Actor, en.Action, en.Subject, en.Detail)
	}
	for _, d := range e.st.Devices() {
		b, _ := json.Marshal(d)
		all.Write(b)
	}
	secrets := append([]string{siteToken, otherToken, adminPass, localPass, string(demoCA(e.t).KeyPEM())}, extra...)
	names := []string{"site token", "other site's token", "admin password", "$$OsAdmin password", "provisioning key", "one-time password"}
	for i, s := range secrets {
		if strings.Contains(all.String(), s) {
			e.t.Errorf("the %s is in the logs, answers, audit or device records", names[min(i, len(names)-1)])
		}
	}
}
