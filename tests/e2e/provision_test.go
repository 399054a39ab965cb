package e2e

import (
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/branchbox/branchbox/tests/amtsim/hello"
)

// TestProvision activates simulated AMT devices end to end — DHCP with
// option 15, DNS for ProvisionServer.<domain>, the hello, mutual TLS on
// 16993 and WS-Man — one fleet per case, all on one appliance at once.
func TestProvision(t *testing.T) {
	branch1 := &labSite{Name: "main", Octet: 81, Domain: "branch1.e2e.example"}
	// The wrong-domain device's MEBx PKI suffix is elsewhere.example, and
	// that zone's ProvisionServer (on the office DNS, here the appliance's
	// extra Corefile) points at the appliance, whose certificate is for
	// branch1.e2e.example.
	l := newLab(t, `
elsewhere.example:53 {
    hosts {
        10.81.0.1 provisionserver.elsewhere.example
    }
}`, branch1)

	cases := []struct {
		name   string
		site   string
		count  int
		noRoot bool // boot without the site's root as a custom hash
		args   []string
		want   string // appliance state of every device in the end
		check  func(t *testing.T, l *lab, f *fleet, sim []simDevice)
	}{
		{name: "bare metal", site: "main", count: 2, want: "activated", check: checkAdminLogin},
		{name: "dropped commit response", site: "main", count: 1, args: []string{"--fault", "drop-commit-response"}, want: "activated",
			check: func(t *testing.T, l *lab, f *fleet, sim []simDevice) {
				checkHistory(t, l, sim, "done", "confirmed by reading state back")
				checkCommits(t, f, sim, 1)
			}},
		{name: "device reboot mid-session", site: "main", count: 1, args: []string{"--fault", "reboot-during-activation=2s"}, want: "activated",
			check: func(t *testing.T, l *lab, f *fleet, sim []simDevice) {
				for _, s := range sim {
					if f.events()[s.UUID]["reboot"] != 1 {
						t.Errorf("device %s did not reboot once: %v", s.UUID, f.events()[s.UUID])
					}
				}
				checkCommits(t, f, sim, 1)
				// The session that lost the device fails; the hello the
				// device sends after its reboot starts the one that succeeds.
				for _, s := range sim {
					h := l.device(s.UUID).History
					failed := slices.IndexFunc(h, func(e historyEvent) bool { return e.State == "failed" })
					if failed < 0 || !slices.ContainsFunc(h[failed:], func(e historyEvent) bool { return e.Step == "hello" }) {
						t.Errorf("%s: want a failed session, then a new hello, then activation: %+v", s.UUID, h)
					}
				}
				checkAdminLogin(t, l, f, sim)
			}},
		{name: "wrong-domain certificate", site: "main", count: 1, args: []string{"--pki-suffix", "elsewhere.example"}, want: "failed",
			check: func(t *testing.T, l *lab, f *fleet, sim []simDevice) {
				for _, s := range sim {
					d := l.deviceIn(s.UUID, "failed")
					if !strings.Contains(d.LastError, "refused the provisioning certificate") || !strings.Contains(d.LastError, "DNS suffix") {
						t.Errorf("%s: last_error %q does not name the certificate's domain suffix", d.UUID, d.LastError)
					}
				}
				for _, d := range f.devices() {
					if !strings.Contains(d.LastError, "domain-suffix") || d.ControlMode != "none" {
						t.Errorf("amtsim device %d: %s, %q; want it unprovisioned with a domain-suffix rejection", d.Index, d.ControlMode, d.LastError)
					}
				}
			}},
		{name: "root hash not offered", site: "main", count: 1, noRoot: true, want: "failed",
			check: func(t *testing.T, l *lab, f *fleet, sim []simDevice) {
				for _, s := range sim {
					d := l.deviceIn(s.UUID, "failed")
					if len(d.Hashes) == 0 || !strings.Contains(d.LastError, "not among the") {
						t.Errorf("%s: last_error %q, hashes %v", d.UUID, d.LastError, d.Hashes)
					}
					for _, h := range d.Hashes {
						if !strings.Contains(d.LastError, h) {
							t.Errorf("%s: last_error does not name offered hash %s: %q", d.UUID, h, d.LastError)
						}
					}
				}
			}},
	}

	fleets := make([]*fleet, len(cases))
	want := map[*fleet]string{}
	for i, tc := range cases {
		fleets[i] = l.startFleet(tc.site, tc.count, !tc.noRoot, tc.args...)
		want[fleets[i]] = tc.want
	}
	// The agent-initiated devices boot beside the fleets.
	otp := l.startOTPDevices(branch1)
	l.waitStates(3*time.Minute, want)

	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sim := fleets[i].devices()
			if len(sim) != tc.count {
				t.Fatalf("amtsim lists %d devices, want %d", len(sim), tc.count)
			}
			for _, d := range l.devicesOf(sim) {
				wantFQDN := "amt-" + d.UUID[:8] + "." + l.sites[tc.site].Domain
				if tc.want == "activated" && d.FQDN != wantFQDN {
					t.Errorf("%s: fqdn %q, want %q", d.UUID, d.FQDN, wantFQDN)
				}
			}
			for _, s := range sim {
				activated := s.ControlMode == "acm"
				if activated != (tc.want == "activated") {
					t.Errorf("amtsim device %d: control mode %q, state %q, last error %q", s.Index, s.ControlMode, s.State, s.LastError)
				}
			}
			tc.check(t, l, fleets[i], sim)
		})
	}
	t.Run("agent-initiated", otp.check)
}

// devicesOf returns the appliance's records of the simulated devices.
func (l *lab) devicesOf(sim []simDevice) []apiDevice {
	l.t.Helper()
	all := l.devices()
	out := make([]apiDevice, 0, len(sim))
	for _, s := range sim {
		d, ok := all[s.UUID]
		if !ok {
			l.t.Fatalf("the appliance does not know device %s", s.UUID)
		}
		out = append(out, d)
	}
	return out
}

// checkAdminLogin connects to each activated device again as a
// management console would: TLS without a client certificate, digest with
// the profile's admin password — and is refused with a wrong one.
func checkAdminLogin(t *testing.T, l *lab, _ *fleet, sim []simDevice) {
	for _, s := range sim {
		code, body := l.wsmanGet(s.IP, labAdminPassword)
		if code != 200 || !strings.Contains(body, "ProvisioningState>2<") {
			t.Errorf("device %s at %s with the admin password: HTTP %d\n%s", s.UUID, s.IP, code, body)
		}
		if code, _ := l.wsmanGet(s.IP, "Wrong-Pass!1"); code != 401 {
			t.Errorf("device %s at %s took a wrong admin password: HTTP %d", s.UUID, s.IP, code)
		}
	}
}

// checkHistory wants an event of the given step whose detail holds text
// on every device.
func checkHistory(t *testing.T, l *lab, sim []simDevice, step, text string) {
	for _, s := range sim {
		d := l.device(s.UUID)
		if !slices.ContainsFunc(d.History, func(e historyEvent) bool {
			return e.Step == step && strings.Contains(e.Detail, text)
		}) {
			t.Errorf("%s: no %q event with %q in its history: %+v", s.UUID, step, text, d.History)
		}
	}
}

// checkCommits wants every device to have committed exactly want times.
func checkCommits(t *testing.T, f *fleet, sim []simDevice, want int) {
	events := f.events()
	for _, s := range sim {
		if n := events[s.UUID]["commit"]; n != want {
			t.Errorf("device %s committed %d times, want %d", s.UUID, n, want)
		}
	}
}

// otpDevices are agent-initiated activations: a management console
// registers the device, its agent sets the one-time password in the
// firmware, the device boots. amtsim's fleet mode draws random UUIDs, so
// these run as `amtsim serve` devices with a chosen UUID on a macvlan that
// gets its address with udhcpc, finds the provisioner with dig and sends
// the hello the firmware would (amtsim's own hello encoder).
type otpDevices struct {
	l          *lab
	match, bad otpDevice
}

type otpDevice struct {
	uuid, otp, ip string
	proc          *Proc
}

func (l *lab) startOTPDevices(site *labSite) *otpDevices {
	t := l.t
	t.Helper()
	RequireTools(t, map[string]string{"udhcpc": "udhcpc", "dig": "bind9-dnsutils"})
	o := &otpDevices{l: l}
	for i, dev := range []struct {
		d      *otpDevice
		inFirm func(registered string) string // what the agent set in the firmware
	}{
		{&o.match, func(otp string) string { return otp }},
		{&o.bad, func(otp string) string { return "Mismatch" + otp[8:] }},
	} {
		dev.d.uuid = randomUUIDString(t)
		var reg struct{ UUID, OTP string }
		l.ctl(&reg, "devices", "register", dev.d.uuid, "--site", site.Name)
		if reg.UUID != dev.d.uuid || len(reg.OTP) < 8 {
			t.Fatalf("register %s: %+v", dev.d.uuid, reg)
		}
		dev.d.otp = reg.OTP
		dev.d.ip, dev.d.proc = l.bootSingle(site, fmt.Sprintf("otp%d", i), dev.d.uuid, "--otp", dev.inFirm(reg.OTP))
	}
	return o
}

// check: the device whose firmware holds the registered password is
// activated, the other is refused and its provisioning period closed;
// each password is consumed once and shows up in no log, audit or API
// answer.
func (o *otpDevices) check(t *testing.T) {
	l := o.l
	deadline := time.Now().Add(time.Minute)
	for {
		devs := l.devices()
		if devs[o.match.uuid].State == "activated" && devs[o.bad.uuid].State == "failed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("matching OTP device: %+v\nmismatching OTP device: %+v", devs[o.match.uuid], devs[o.bad.uuid])
		}
		time.Sleep(time.Second)
	}
	checkAdminLogin(t, l, nil, []simDevice{{UUID: o.match.uuid, IP: o.match.ip}})

	bad := l.device(o.bad.uuid)
	if !strings.Contains(strings.ToLower(bad.LastError), "one-time password") {
		t.Errorf("mismatch: last_error %q does not name the one-time password", bad.LastError)
	}
	if out := o.bad.proc.Output(); !strings.Contains(out, "ExtendProvisioningPeriod return_value=0") || strings.Contains(out, "control_mode=acm") {
		t.Errorf("mismatching device: want its provisioning period closed and nothing configured:\n%s", out)
	}
	if code, _ := l.wsmanGet(o.bad.ip, labAdminPassword); code == 200 {
		t.Errorf("mismatching device accepts the profile's admin password")
	}

	audit := l.audit()
	for _, d := range []otpDevice{o.match, o.bad} {
		n := 0
		for _, e := range audit {
			if e.Subject == d.uuid && e.Action == "activation.otp" && strings.Contains(e.Detail, "consumed") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("device %s: one-time password consumed %d times, want 1", d.uuid, n)
		}
	}
	var apiOut strings.Builder
	for _, args := range [][]string{{"audit", "--limit", "10000"}, {"devices"}, {"devices", "show", o.match.uuid}, {"devices", "show", o.bad.uuid}} {
		apiOut.WriteString(l.app.MustRun(l.bin, append([]string{"ctl", "--config", l.cfg, "--output", "json"}, args...)...))
	}
	for where, text := range map[string]string{"the appliance's log": l.box.Output(), "the API": apiOut.String()} {
		for _, secret := range []string{o.match.otp, o.bad.otp, labAdminPassword} {
			if strings.Contains(text, secret) {
				t.Errorf("a secret shows up in %s", where)
			}
		}
	}
}

// bootSingle runs one `amtsim serve` device on a macvlan of the site's LAN:
// udhcpc for its address and option 15, dig for ProvisionServer, then the
// hello from its address to port 9971.
func (l *lab) bootSingle(site *labSite, link, uuid string, args ...string) (ip string, dev *Proc) {
	t := l.t
	t.Helper()
	lan := site.lan
	lan.MustRun("ip", "link", "add", link, "link", "lan0", "type", "macvlan", "mode", "bridge")
	for _, k := range []string{"arp_ignore=1", "arp_announce=2", "rp_filter=2"} {
		lan.MustRun("sysctl", "-qw", "net.ipv4.conf."+link+"."+k)
	}
	lan.MustRun("ip", "link", "set", link, "up")
	dir := filepath.Join(l.dir, link)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "udhcpc.log")
	writeFile(t, filepath.Join(dir, "udhcpc.sh"), fmt.Sprintf(`#!/bin/sh
[ "$1" = bound ] && ip addr add "$ip/$mask" dev "$interface"
echo "$1 ip=$ip dns=$dns domain=$domain" >> %s
`, log), 0o755)
	lan.MustRun("udhcpc", "-f", "-q", "-n", "-i", link, "-t", "10", "-T", "1", "-s", filepath.Join(dir, "udhcpc.sh"))
	lease := waitLine(t, log, "bound ")
	server := strings.TrimSpace(lan.MustRun("dig", "+short", "@"+lease["dns"], "ProvisionServer."+lease["domain"], "A"))
	if net.ParseIP(server) == nil {
		t.Fatalf("ProvisionServer.%s: %q", lease["domain"], server)
	}
	dev = lan.Start(l.sim, append([]string{"serve", "--listen", lease["ip"] + ":16993", "--domain", lease["domain"],
		"--uuid", uuid, "--custom-root-hash", site.rootHash}, args...)...)
	dev.WaitOutput(t, "listening on", 20*time.Second)

	if err := SendHello(lan, lease["ip"], net.JoinHostPort(server, "9971"), uuid, site.rootHash); err != nil {
		t.Fatalf("hello from %s: %v", lease["ip"], err)
	}
	return lease["ip"], dev
}

func randomUUIDString(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var u hello.UUID
	copy(u[:], b)
	return u.String()
}

// TestProvisionManyAtOnce boots 200 devices at once, each repeating its
// hello every 2 s while it waits: every one is activated by exactly one
// session and commits exactly once.
func TestProvisionManyAtOnce(t *testing.T) {
	const count = 200
	l := newLab(t, "", &labSite{Name: "many", Octet: 83, Domain: "branch3.e2e.example"})
	f := l.startFleet("many", count, true)
	l.waitStates(5*time.Minute, map[*fleet]string{f: "activated"})

	sim := f.devices()
	if len(sim) != count {
		t.Fatalf("amtsim lists %d devices, want %d", len(sim), count)
	}
	checkCommits(t, f, sim, 1)
	steps := map[string]map[string]int{}
	for _, e := range l.audit() {
		if steps[e.Subject] == nil {
			steps[e.Subject] = map[string]int{}
		}
		steps[e.Subject][e.Action]++
	}
	for _, s := range sim {
		if s.ControlMode != "acm" {
			t.Errorf("amtsim device %d: control mode %q", s.Index, s.ControlMode)
		}
		// One TLS session (its first step), one commit, one activation.
		for _, a := range []string{"activation.general-settings", "activation.commit", "activation.activated"} {
			if n := steps[s.UUID][a]; n != 1 {
				t.Errorf("device %s: %d audit entries %s, want 1", s.UUID, n, a)
			}
		}
	}
	var hellos int
	for _, s := range sim {
		hellos += s.HellosSent
	}
	t.Logf("%d devices activated; they sent %d hellos", count, hellos)
}
