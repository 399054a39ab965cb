package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/branchbox/branchbox/provisioner/democa"
)

// A provisioning lab: branchbox serve in one namespace with one veth per
// site, and per site a "branch LAN" namespace where amtsim devices boot
// from DHCP like hardware.
//
//	appliance ns: lan-<site> 10.<n>.0.1/16 ── veth ── <site> LAN ns: lan0 (macvlan parent)

// labAdminPassword is AMT-strong: 8+ characters with upper, lower, digit and symbol.
const labAdminPassword = "E2e-Admin!2026"

var (
	buildOnce                sync.Once
	builtBranchbox, builtSim string
	buildErr                 error
)

// provisionBinaries returns $BRANCHBOX_BIN and $AMTSIM_BIN when both are
// set, else bin/branchbox and bin/amtsim freshly made by `make build` (once
// per test run; Go's build cache makes it quick when nothing changed).
func provisionBinaries(t *testing.T) (branchbox, amtsim string) {
	t.Helper()
	buildOnce.Do(func() {
		builtBranchbox, builtSim = os.Getenv("BRANCHBOX_BIN"), os.Getenv("AMTSIM_BIN")
		if builtBranchbox != "" && builtSim != "" {
			return
		}
		root, err := filepath.Abs(filepath.Join("..", ".."))
		if err != nil {
			buildErr = err
			return
		}
		cmd := exec.Command("make", "-s", "build")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("make build: %v\n%s", err, out)
			return
		}
		builtBranchbox, builtSim = filepath.Join(root, "bin", "branchbox"), filepath.Join(root, "bin", "amtsim")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBranchbox, builtSim
}

// labSite is one branch LAN of the lab.
type labSite struct {
	Name   string
	Octet  int // the site is 10.<Octet>.0.0/16, the appliance .0.1
	Domain string
	// AgentToken, when set, lets branchbox-agent register the site's
	// devices (sites[].agent_token_file).
	AgentToken string

	lan      *NS
	rootHash string
	dir      string
}

type lab struct {
	t         *testing.T
	bin, sim  string
	dir, cfg  string
	app       *NS
	box       *Proc
	sites     map[string]*labSite
	fleetPort int
}

// newLab builds the namespaces, the sites' certificate chains and config
// (corefile, when not empty, is its dns.corefile), and starts branchbox serve.
func newLab(t *testing.T, corefile string, sites ...*labSite) *lab {
	t.Helper()
	RequireRoot(t)
	RequireTools(t, map[string]string{"ip": "iproute2", "curl": "curl"})
	l := &lab{t: t, dir: t.TempDir(), sites: map[string]*labSite{}, fleetPort: 17000}
	l.bin, l.sim = provisionBinaries(t)
	l.app = NewNS(t, "papp")
	var yaml strings.Builder
	fmt.Fprintf(&yaml, "node:\n  id: e2eprov\n  data_dir: %s/data\n  api: 127.0.0.1:18443\n", l.dir)
	yaml.WriteString("dns:\n  listen: \":53\"\n")
	if corefile != "" {
		yaml.WriteString("  corefile: |\n    " + strings.ReplaceAll(strings.TrimSpace(corefile), "\n", "\n    ") + "\n")
	}
	yaml.WriteString("provisioner:\n  listen: \":9971\"\nsites:\n")
	pass := filepath.Join(l.dir, "admin.pass")
	writeFile(t, pass, labAdminPassword+"\n", 0o600)
	for _, s := range sites {
		s.dir = filepath.Join(l.dir, s.Name)
		chain, err := democa.Generate(democa.Options{Domain: s.Domain})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := chain.WriteFiles(s.dir); err != nil {
			t.Fatal(err)
		}
		s.rootHash = chain.RootSHA256()
		s.lan = NewNS(t, "p"+s.Name)
		Link(t, l.app, "lan-"+s.Name, fmt.Sprintf("10.%d.0.1/16", s.Octet), s.lan, "lan0", "")
		fmt.Fprintf(&yaml, `  - name: %[1]s
    domain: %[2]s
    interface: lan-%[1]s
    subnet: 10.%[3]d.0.0/16
    range: [10.%[3]d.1.0, 10.%[3]d.3.255]
    router: 10.%[3]d.0.1
    lease_time: 1h
    provisioning_cert: {chain: %[4]s/chain.pem, key: %[4]s/key.pem}
    profile: e2e
    naming_template: amt-{uuid8}
    allow_template: true
`, s.Name, s.Domain, s.Octet, s.dir)
		if s.AgentToken != "" {
			writeFile(t, filepath.Join(s.dir, "agent.token"), s.AgentToken+"\n", 0o600)
			fmt.Fprintf(&yaml, "    agent_token_file: %s/agent.token\n", s.dir)
		}
		l.sites[s.Name] = s
	}
	fmt.Fprintf(&yaml, "profiles:\n  - name: e2e\n    admin_password_file: %s\n", pass)
	l.cfg = filepath.Join(l.dir, "branchbox.yaml")
	writeFile(t, l.cfg, yaml.String(), 0o644)

	l.box = l.app.Start(l.bin, "serve", "--config", l.cfg)
	l.box.WaitOutput(t, "branchbox ready", 60*time.Second)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("branchbox log:\n%s", tail(l.box.Output(), 60))
		}
	})
	return l
}

// ctl runs branchbox ctl inside the appliance namespace (the API listens
// on its loopback) and decodes its JSON output into v.
func (l *lab) ctl(v any, args ...string) {
	l.t.Helper()
	out := l.app.MustRun(l.bin, append([]string{"ctl", "--config", l.cfg, "--output", "json"}, args...)...)
	if v != nil {
		if err := json.Unmarshal([]byte(out), v); err != nil {
			l.t.Fatalf("ctl %v: %v\n%s", args, err, out)
		}
	}
}

// apiDevice is an entry of GET /api/v1/devices (contract.md).
type apiDevice struct {
	UUID       string    `json:"uuid"`
	Site       string    `json:"site"`
	FQDN       string    `json:"fqdn"`
	State      string    `json:"state"`
	AMTVersion string    `json:"amt_version"`
	IP         string    `json:"ip"`
	LastError  string    `json:"last_error"`
	Updated    time.Time `json:"updated"`
}

type deviceDetail struct {
	apiDevice
	Hashes  []string       `json:"hashes"`
	History []historyEvent `json:"history"`
}

type historyEvent struct {
	Time   time.Time `json:"time"`
	State  string    `json:"state"`
	Step   string    `json:"step"`
	Detail string    `json:"detail"`
}

// deviceIn waits for the device to be in state — a device that keeps
// sending hellos passes through "seen" again each time — and returns it.
func (l *lab) deviceIn(uuid, state string) deviceDetail {
	l.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		d := l.device(uuid)
		if d.State == state || time.Now().After(deadline) {
			return d
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (l *lab) devices() map[string]apiDevice {
	var ds []apiDevice
	l.ctl(&ds, "devices")
	m := map[string]apiDevice{}
	for _, d := range ds {
		m[d.UUID] = d
	}
	return m
}

func (l *lab) device(uuid string) deviceDetail {
	var d deviceDetail
	l.ctl(&d, "devices", "show", uuid)
	return d
}

type auditEntry struct {
	Time    time.Time `json:"time"`
	Actor   string    `json:"actor"`
	Action  string    `json:"action"`
	Subject string    `json:"subject"`
	Detail  string    `json:"detail"`
}

func (l *lab) audit() []auditEntry {
	var es []auditEntry
	l.ctl(&es, "audit", "--limit", "10000")
	return es
}

// simDevice is an entry of amtsim's status endpoint.
type simDevice struct {
	Index       int    `json:"index"`
	IP          string `json:"ip"`
	UUID        string `json:"uuid"`
	State       string `json:"state"`
	ControlMode string `json:"control_mode"`
	LastError   string `json:"last_error"`
	HellosSent  int    `json:"hellos_sent"`
}

// fleet is one amtsim --count N process on a site's LAN.
type fleet struct {
	l      *lab
	site   *labSite
	proc   *Proc
	status string
}

// startFleet boots count simulated devices on the site's LAN, with the
// site's root as a custom hash when withRootHash.
func (l *lab) startFleet(site string, count int, withRootHash bool, args ...string) *fleet {
	l.t.Helper()
	s := l.sites[site]
	l.fleetPort++
	f := &fleet{l: l, site: s, status: fmt.Sprintf("127.0.0.1:%d", l.fleetPort)}
	argv := []string{"--count", fmt.Sprint(count), "--interface", "lan0", "--status-listen", f.status,
		"--hello-schedule", "100x2s", "--dhcp-timeout", "3s", "--status-json"}
	if withRootHash {
		argv = append(argv, "--custom-root-hash", s.rootHash)
	}
	f.proc = s.lan.Start(l.sim, append(argv, args...)...)
	// amtsim makes every device's TLS key before it serves its status.
	f.proc.WaitOutput(l.t, "amtsim: status on", 30*time.Second+time.Duration(count)*750*time.Millisecond)
	l.t.Cleanup(func() {
		if l.t.Failed() {
			l.t.Logf("amtsim %v:\n%s", args, tail(f.proc.Output(), 40))
		}
	})
	return f
}

// devices reads the fleet's status endpoint from inside its namespace.
// The connection is dialled on Do's thread itself: http.Client would dial
// from another goroutine, on a thread in some other namespace.
func (f *fleet) devices() []simDevice {
	f.l.t.Helper()
	var ds []simDevice
	err := f.site.lan.GetJSON(f.status, &ds)
	if err != nil {
		select {
		case <-f.proc.done:
			err = fmt.Errorf("%w (amtsim exited: %v)", err, f.proc.err)
		default:
		}
		f.l.t.Fatalf("amtsim status: %v", err)
	}
	return ds
}

// simEvent is one state-change line amtsim printed (--status-json).
type simEvent struct {
	UUID  string `json:"uuid"`
	Event string `json:"event"`
}

// events returns how many times each device printed each event.
func (f *fleet) events() map[string]map[string]int {
	n := map[string]map[string]int{}
	for _, line := range strings.Split(f.proc.Output(), "\n") {
		var e simEvent
		if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &e) != nil {
			continue // slog lines on stderr
		}
		if n[e.UUID] == nil {
			n[e.UUID] = map[string]int{}
		}
		n[e.UUID][e.Event]++
	}
	return n
}

// waitStates waits until every device of every fleet has a UUID the
// appliance records in its wanted state, and returns the appliance's view.
func (l *lab) waitStates(timeout time.Duration, want map[*fleet]string) map[string]apiDevice {
	l.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		devs := l.devices()
		var pending []string
		for f, state := range want {
			for _, sd := range f.devices() {
				d, ok := devs[sd.UUID]
				if !ok || d.State != state {
					pending = append(pending, fmt.Sprintf("device %d %s (amtsim %s/%s %q): appliance says %q %q, want %s",
						sd.Index, sd.UUID, sd.State, sd.ControlMode, sd.LastError, d.State, d.LastError, state))
				}
			}
		}
		if len(pending) == 0 {
			return devs
		}
		if time.Now().After(deadline) {
			if len(pending) > 20 {
				pending = append(pending[:20], fmt.Sprintf("... and %d more", len(pending)-20))
			}
			l.t.Fatalf("after %s:\n%s", timeout, strings.Join(pending, "\n"))
		}
		time.Sleep(time.Second)
	}
}

// wsmanGet asks a device for AMT_SetupAndConfigurationService over TLS on
// 16993 from the appliance namespace, with digest user admin, and returns
// the HTTP status (0: no HTTP answer) and body.
func (l *lab) wsmanGet(ip, password string) (int, string) {
	l.t.Helper()
	envelope := `<?xml version="1.0" encoding="UTF-8"?>` +
		`<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd">` +
		`<s:Header><a:Action s:mustUnderstand="true">http://schemas.xmlsoap.org/ws/2004/09/transfer/Get</a:Action>` +
		`<a:To s:mustUnderstand="true">/wsman</a:To>` +
		`<w:ResourceURI s:mustUnderstand="true">http://intel.com/wbem/wscim/1/amt-schema/1/AMT_SetupAndConfigurationService</w:ResourceURI>` +
		`<a:MessageID s:mustUnderstand="true">uuid:00000000-8086-8086-8086-000000000001</a:MessageID>` +
		`<a:ReplyTo><a:Address>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo>` +
		`</s:Header><s:Body/></s:Envelope>`
	// curl prints the code (000 when no HTTP answer came) even when it fails.
	out, err := l.app.Run("curl", "-sk", "--max-time", "20", "--digest", "-u", "admin:"+password,
		"-H", "Content-Type: application/soap+xml;charset=UTF-8", "--data-binary", envelope,
		"-w", "\n%{http_code}", "https://"+ip+":16993/wsman")
	i := strings.LastIndex(out, "\n")
	var code int
	if _, serr := fmt.Sscan(out[i+1:], &code); serr != nil {
		l.t.Fatalf("curl to %s: %v %v", ip, err, serr)
	}
	return code, out[:max(i, 0)]
}

func tail(s string, lines int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}
