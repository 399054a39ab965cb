package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/branchbox/branchbox/provisioner/agent/agenttest"
)

// TestDependencies keeps the agent small: no DNS server, consensus log,
// bolt store, appliance, cluster or plugins inside.
func TestDependencies(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const self = "github.com/branchbox/branchbox/appliance/cmd/branchbox-agent"
	forbidden := []string{"github.com/coredns/", "github.com/hashicorp/raft", "go.etcd.io/bbolt", "github.com/boltdb/bolt",
		"github.com/branchbox/branchbox/appliance", "github.com/branchbox/branchbox/cluster", "github.com/branchbox/branchbox/plugins",
		"github.com/branchbox/branchbox/provisioner/agent/agenttest"}
	pkgs := strings.Fields(string(out))
	if len(pkgs) < 10 {
		t.Fatalf("go list -deps printed %d packages", len(pkgs))
	}
	for _, p := range pkgs {
		if p == self {
			continue
		}
		for _, f := range forbidden {
			if strings.HasPrefix(p, f) {
				t.Errorf("branchbox-agent links %s", p)
			}
		}
	}
}

const (
	site    = "branch-7"
	token   = "site-token-0123456789-abcdef"
	testOTP = "OTP7K2M9Q4X8W3Z1"
)

type cli struct {
	t       *testing.T
	globals []string
	secrets []string
	all     bytes.Buffer // every byte printed, for the secret check
}

func (c *cli) run(args ...string) (int, string, string) {
	c.t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), append(append([]string{}, c.globals...), args...), &stdout, &stderr)
	c.all.Write(stdout.Bytes())
	c.all.Write(stderr.Bytes())
	return code, stdout.String(), stderr.String()
}

// TestCommands drives every subcommand in-process against the fake
// firmware, LMS and agent listener, and checks that neither the OTP nor
// the $$OsAdmin password nor the token is ever printed or logged.
func TestCommands(t *testing.T) {
	dev := agenttest.NewPTHI()
	srv := &agenttest.Server{Site: site, Token: token, OTP: testOTP, Domain: "branch.example.com",
		Expires: time.Date(2099, 1, 2, 3, 4, 5, 0, time.UTC)}
	url := srv.Start(t)
	lms := agenttest.NewLMS(dev.Password, "admin-pw-1")
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte(token), 0o600)
	state := filepath.Join(t.TempDir(), "state")
	c := &cli{t: t, globals: []string{"--mei", "unix:" + dev.Serve(t), "--lms", lms.Serve(t, false), "--state-dir", state, "--timeout", "5s"}}
	c.secrets = []string{testOTP, dev.Password, token}
	server := []string{"--server", url, "--site", site, "--token-file", tok}

	code, out, errOut := c.run("info")
	wantTable := `uuid: 12345678-9abc-def0-1122-334455667788
amt_version: 16.1.25
build: 2049
sku: 16392
state: pre-provisioning
control_mode: none
dns_suffix: branch.example.com
mac: 02:42:ac:11:00:05
ip: 10.1.0.5
hash: SHA256 b55d12476549b20a39e27bac39c0841b21f448de861f8a4d570dc0d04bb53242 active,default "Example Root 1"
hash: SHA1 f7f776e487dad460bc8dc1c64ed71d9c078fcb00 - "Example Root 2"
`
	if code != 0 || out != wantTable {
		t.Fatalf("info: %d\n%s\nstderr: %s", code, out, errOut)
	}
	code, out, _ = c.run("info", "--output", "json")
	var info map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &info) != nil || info["uuid"] != dev.UUID || len(info) != 10 {
		t.Fatalf("info json: %d %s", code, out)
	}

	code, out, errOut = c.run(append([]string{"register", "--output", "json"}, server...)...)
	var reg map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &reg) != nil {
		t.Fatalf("register: %d %s %s", code, out, errOut)
	}
	if want := map[string]string{"uuid": dev.UUID, "site": site, "domain": "branch.example.com", "expires": "2099-01-02T03:04:05Z"}; fmt.Sprint(reg) != fmt.Sprint(want) {
		t.Fatalf("register printed %v", reg)
	}

	// Global flags after the command work too.
	srv.States = []string{"", "seen", "activated"}
	code, out, errOut = c.run(append([]string{"start", "--wait", "10s"}, server...)...)
	if code != 0 || out != "uuid: "+dev.UUID+"\nstate: in-provisioning\nserver_state: activated\nlast_error: \n" {
		t.Fatalf("start --wait: %d\n%s\n%s", code, out, errOut)
	}
	dev.Lock()
	if dev.OTP != testOTP || dev.State != 1 {
		t.Fatalf("device otp %q state %d", dev.OTP, dev.State)
	}
	dev.Unlock()

	code, out, _ = c.run("stop")
	if code != 0 || !strings.Contains(out, "state: pre-provisioning") {
		t.Fatalf("stop: %d %s", code, out)
	}

	otpFile := filepath.Join(t.TempDir(), "otp")
	os.WriteFile(otpFile, []byte("CONSOLE-OTP-9876\n"), 0o600)
	c.secrets = append(c.secrets, "CONSOLE-OTP-9876")
	if code, out, errOut = c.run("start", "--otp-file", otpFile); code != 0 || !strings.Contains(out, "state: in-provisioning") {
		t.Fatalf("start --otp-file: %d %s %s", code, out, errOut)
	}
	dev.Lock()
	if dev.OTP != "CONSOLE-OTP-9876" {
		t.Fatalf("device otp %q", dev.OTP)
	}
	dev.Unlock()

	srv.Relay = func(rc *agenttest.RelayConn) error {
		resp, _, err := rc.Do("POST", "/wsman", http.Header{"Branchbox-Relay-Auth": {"osadmin"}, "Content-Type": {"application/soap+xml"}}, []byte("<a:Envelope/>"))
		if err != nil || resp.StatusCode != 200 {
			return fmt.Errorf("wsman: %v %v", resp, err)
		}
		return rc.PostResult(dev.UUID, "acm", "verify", "")
	}
	code, out, errOut = c.run(append([]string{"activate", "--acm"}, server...)...)
	if code != 0 || !strings.Contains(out, "control_mode: acm\n") || !strings.Contains(errOut, "relay: wsman") {
		t.Fatalf("activate: %d\n%s\n%s", code, out, errOut)
	}

	srv.Relay = func(rc *agenttest.RelayConn) error {
		return rc.PostResult(dev.UUID, "none", "admin-setup", "AdminSetup: 5 AuthFailed")
	}
	code, out, errOut = c.run(append([]string{"activate", "--acm", "--output", "json"}, server...)...)
	if code != 1 || !strings.Contains(out, `"error": "AdminSetup: 5 AuthFailed"`) || !strings.Contains(errOut, `not activated: step "admin-setup"`) {
		t.Fatalf("failed activate: %d\n%s\n%s", code, out, errOut)
	}

	for _, s := range c.secrets {
		if strings.Contains(c.all.String(), s) {
			t.Errorf("secret %q printed:\n%s", s[:4]+"…", c.all.String())
		}
	}
}

func TestUsageErrors(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte(token), 0o600)
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "usage:"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"info", "--output", "yaml"}, 2, `--output "yaml": want table or json`},
		{[]string{"info", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"info", "--server", "x"}, 2, "flag provided but not defined: -server"},
		{[]string{"activate"}, 2, "--acm is required"},
		{[]string{"register", "--mei", "unix:/nonexistent"}, 1, "--server: required"},
		{[]string{"register", "--server", "http://h", "--site", "s", "--token-file", tok}, 1, "scheme must be https"},
		{[]string{"start", "--state-dir", t.TempDir(), "--mei", "unix:/nonexistent"}, 1, "not registered yet"},
		{[]string{"info", "--mei", "/nonexistent/mei0"}, 1, "mei_me"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tt.args, &stdout, &stderr)
		if code != tt.code || !strings.Contains(stdout.String()+stderr.String(), tt.want) {
			t.Errorf("%v: %d %q %q, want %d %q", tt.args, code, stdout.String(), stderr.String(), tt.code, tt.want)
		}
	}
}
