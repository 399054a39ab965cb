package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestAgent runs the real branchbox-agent against real amtsim devices over
// their MEI sockets, with branchbox's agent listener on the site's LAN:
// agent-initiated activation (register → OTP set through PTHI → window
// opened → hello → out-of-band activation with the OTP read back), the
// same with a wrong OTP, host-based ACM relayed through the agent, and a
// device whose hash table lacks the site's root, refused before anything
// is sent to it.
func TestAgent(t *testing.T) {
	const token = "e2e-agent-token-0123456789abcdef"
	site := &labSite{Name: "agents", Octet: 83, Domain: "agents.e2e.example", AgentToken: token}
	l := newLab(t, "", site)
	agentBin := filepath.Join(filepath.Dir(l.bin), "branchbox-agent")
	if _, err := os.Stat(agentBin); err != nil {
		t.Fatalf("agent binary: %v (make build makes it beside branchbox)", err)
	}

	meiDir := filepath.Join(l.dir, "mei")
	f := l.startFleet(site.Name, 3, true, "--setup-mode=false", "--mei-dir", meiDir)
	bare := filepath.Join(l.dir, "mei-noroot")
	g := l.startFleet(site.Name, 1, false, "--setup-mode=false", "--mei-dir", bare)
	devs := waitAddressed(t, f, 3)
	noRoot := waitAddressed(t, g, 1)[0]

	tokenFile := filepath.Join(site.dir, "agent.token")
	var secrets []string
	secrets = append(secrets, token, labAdminPassword)
	var agentOut strings.Builder
	agent := func(dir string, d simDevice, cmd ...string) (string, error) {
		argv := append(cmd,
			"--mei", fmt.Sprintf("unix:%s/%d.mei", dir, d.Index),
			"--lms", fmt.Sprintf("unix:%s/%d.lms", dir, d.Index),
			"--state-dir", filepath.Join(l.dir, fmt.Sprintf("agent-%s-%d", filepath.Base(dir), d.Index)))
		if cmd[0] != "info" {
			argv = append(argv, "--server", "https://10.83.0.1:9972", "--site", site.Name, "--token-file", tokenFile)
		}
		out, err := site.lan.Run(agentBin, argv...)
		agentOut.WriteString(out)
		return out, err
	}

	{ // info matches the device
		out, err := agent(meiDir, devs[0], "info", "--output", "json")
		if err != nil {
			t.Fatalf("agent info: %v\n%s", err, out)
		}
		var info map[string]any
		if err := json.Unmarshal([]byte(out), &info); err != nil {
			t.Fatalf("agent info JSON: %v\n%s", err, out)
		}
		var status []map[string]any
		if err := site.lan.GetJSON(f.status, &status); err != nil {
			t.Fatal(err)
		}
		var dev map[string]any
		for _, s := range status {
			if s["uuid"] == devs[0].UUID {
				dev = s
			}
		}
		for _, k := range []string{"uuid", "amt_version", "build", "sku", "state", "control_mode", "dns_suffix", "hashes", "mac", "ip"} {
			if info[k] == nil || !reflect.DeepEqual(info[k], dev[k]) {
				t.Errorf("%s: agent says %v, amtsim %v", k, info[k], dev[k])
			}
		}
		if info["dns_suffix"] != site.Domain || info["state"] != "pre-provisioning" {
			t.Errorf("device not as booted: %v", info)
		}
	}

	{ // agent-initiated with the registered OTP
		d := devs[0]
		if out, err := agent(meiDir, d, "register"); err != nil || !strings.Contains(out, site.Domain) {
			t.Fatalf("register: %v\n%s", err, out)
		}
		secrets = append(secrets, registeredOTP(t, l, d))
		if out, err := agent(meiDir, d, "start", "--wait", "90s"); err != nil {
			t.Fatalf("start --wait: %v\n%s\nappliance: %+v", err, out, l.device(d.UUID))
		}
		got := l.deviceIn(d.UUID, "activated")
		checkAdminLogin(t, l, nil, []simDevice{d})
		n := 0
		for _, e := range l.audit() {
			if e.Subject == d.UUID && e.Action == "activation.otp" && strings.Contains(e.Detail, "consumed") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("OTP consumed %d times, want 1 (%+v)", n, got)
		}
	}

	{ // agent-initiated with a wrong OTP
		d := devs[1]
		if out, err := agent(meiDir, d, "register"); err != nil {
			t.Fatalf("register: %v\n%s", err, out)
		}
		secrets = append(secrets, registeredOTP(t, l, d))
		wrong := filepath.Join(l.dir, "wrong.otp")
		writeFile(t, wrong, "Wrong-OTP-1234567\n", 0o600)
		out, err := agent(meiDir, d, "start", "--otp-file", wrong, "--wait", "90s")
		if err == nil {
			t.Fatalf("start with a wrong OTP succeeded:\n%s", out)
		}
		got := l.deviceIn(d.UUID, "failed")
		if !strings.Contains(strings.ToLower(got.LastError), "one-time password") {
			t.Errorf("last_error %q does not name the one-time password", got.LastError)
		}
		if code, _ := l.wsmanGet(d.IP, labAdminPassword); code == 200 {
			t.Errorf("a device with the wrong OTP accepts the profile's admin password")
		}
	}

	{ // host-based ACM through the agent
		d := devs[2]
		out, err := agent(meiDir, d, "activate", "--acm", "--output", "json")
		if err != nil {
			t.Fatalf("activate --acm: %v\n%s\nappliance: %+v", err, out, l.device(d.UUID))
		}
		l.deviceIn(d.UUID, "activated")
		for _, s := range f.devices() {
			if s.UUID == d.UUID && s.ControlMode != "acm" {
				t.Errorf("amtsim: control mode %q, state %q, last error %q", s.ControlMode, s.State, s.LastError)
			}
		}
		checkAdminLogin(t, l, nil, []simDevice{d})
		steps := map[string]bool{}
		for _, e := range l.audit() {
			if e.Subject == d.UUID {
				steps[e.Action] = true
			}
		}
		for _, s := range []string{"activation.cert-chain", "activation.admin-setup", "activation.mebx-password"} {
			if !steps[s] {
				t.Errorf("no audit entry %q for the device: %v", s, steps)
			}
		}
	}

	{ // root hash not in the device's table
		for _, cmd := range [][]string{{"register"}, {"activate", "--acm"}} {
			out, err := agent(bare, noRoot, cmd...)
			if err == nil || !strings.Contains(out, "root-hash") {
				t.Errorf("%v on a device without the site's root: %v\n%s", cmd, err, out)
			}
		}
		for _, s := range g.devices() {
			if s.ControlMode != "none" || s.State != "pre-provisioning" {
				t.Errorf("refused device changed: %+v", s)
			}
		}
	}

	{ // no secret printed
		texts := map[string]string{"the agent's output": agentOut.String(), "the appliance's log": l.box.Output(),
			"amtsim's output": f.proc.Output()}
		for where, text := range texts {
			for _, s := range secrets {
				if strings.Contains(text, s) {
					t.Errorf("a secret (%d chars) shows up in %s", len(s), where)
				}
			}
		}
	}
}

// waitAddressed waits until the fleet's n devices have their DHCP lease.
func waitAddressed(t *testing.T, f *fleet, n int) []simDevice {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ds := f.devices()
		ok := len(ds) == n
		for _, d := range ds {
			ok = ok && d.IP != ""
		}
		if ok {
			return ds
		}
		if time.Now().After(deadline) {
			t.Fatalf("devices without an address: %+v", ds)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// registeredOTP reads the OTP the agent stored, so the test can look for
// it where it must not be.
func registeredOTP(t *testing.T, l *lab, d simDevice) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(l.dir, fmt.Sprintf("agent-mei-%d", d.Index), "registration.json"))
	if err != nil {
		t.Fatal(err)
	}
	var reg struct{ OTP string }
	if json.Unmarshal(b, &reg) != nil || len(reg.OTP) < 8 {
		t.Fatalf("registration.json has no OTP")
	}
	return reg.OTP
}
