package device

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/branchbox/branchbox/tests/amtsim/firmware"
	"github.com/branchbox/branchbox/tests/amtsim/hello"
)

// clock is a settable time source for window tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func withClock(c *clock) func(*Config) {
	return func(cfg *Config) {
		cfg.Now = c.now
		cfg.FirstWindow, cfg.LaterWindow = 24*time.Hour, 6*time.Hour
	}
}

// The host-interface state machine: which setup command each provisioning
// state admits, and what it changes.
func TestHostInterfaceStateMachine(t *testing.T) {
	type step struct {
		name  string
		do    func(d *Device, c *clock) int
		want  int
		state ProvisioningState
		open  bool
	}
	otp := func(s string) func(*Device, *clock) int {
		return func(d *Device, _ *clock) int { return d.SetProvisioningServerOTP(s) }
	}
	start := func(d *Device, _ *clock) int { return d.StartConfiguration() }
	stop := func(d *Device, _ *clock) int { return d.StopConfiguration() }
	wait := func(h time.Duration) func(*Device, *clock) int {
		return func(_ *Device, c *clock) int { c.add(h); return PTSuccess }
	}
	tests := []struct {
		name      string
		setupMode bool
		steps     []step
	}{
		{"agent-initiated from pre-provisioning", false, []step{
			{"otp", otp("Branch-OTP-1"), PTSuccess, PreProvisioning, false},
			{"start", start, PTSuccess, InProvisioning, true},
			{"otp while window open", otp("Branch-OTP-2"), PTInvalidPTMode, InProvisioning, true},
			{"start while window open", start, PTInvalidPTMode, InProvisioning, true},
			{"first window lasts 24 h", wait(23 * time.Hour), PTSuccess, InProvisioning, true},
			{"then closes", wait(2 * time.Hour), PTSuccess, InProvisioning, false},
			{"otp after the period elapsed", otp("Branch-OTP-3"), PTSuccess, InProvisioning, false},
			{"start reopens", start, PTSuccess, InProvisioning, true},
			{"later window lasts 6 h", wait(6*time.Hour + time.Second), PTSuccess, InProvisioning, false},
		}},
		{"stop returns to pre-provisioning", false, []step{
			{"stop while pre", stop, PTInvalidPTMode, PreProvisioning, false},
			{"start", start, PTSuccess, InProvisioning, true},
			{"stop", stop, PTSuccess, PreProvisioning, false},
			{"stop again", stop, PTInvalidPTMode, PreProvisioning, false},
			{"restart gets the later window", start, PTSuccess, InProvisioning, true},
			{"which ends after 6 h", wait(6*time.Hour + time.Second), PTSuccess, InProvisioning, false},
		}},
		{"setup mode at boot", true, []step{
			{"otp refused in the boot window", otp("Branch-OTP-1"), PTInvalidPTMode, InProvisioning, true},
			{"stop", stop, PTSuccess, PreProvisioning, false},
			{"otp", otp("Branch-OTP-1"), PTSuccess, PreProvisioning, false},
		}},
		{"OTP rules", false, []step{
			{"7 characters", otp("1234567"), PTInvalidParameter, PreProvisioning, false},
			{"33 characters", otp(strings.Repeat("x", 33)), PTInvalidParameter, PreProvisioning, false},
			{"control character", otp("Branch\tOTP1"), PTInvalidParameter, PreProvisioning, false},
			{"non-ASCII", otp("Bränch-OTP-1"), PTInvalidParameter, PreProvisioning, false},
			{"8 characters", otp("12345678"), PTSuccess, PreProvisioning, false},
			{"32 characters with a space", otp(strings.Repeat("y", 31) + " "), PTSuccess, PreProvisioning, false},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			d := newDevice(t, "16", tc.setupMode, nil, withClock(c))
			for _, s := range tc.steps {
				if got := s.do(d, c); got != s.want {
					t.Fatalf("%s: status %d, want %d (%s)", s.name, got, s.want, d.Status().LastError)
				}
				if st, _ := d.State(); st != s.state || d.WindowOpen() != s.open {
					t.Fatalf("%s: %s, window open %v; want %s, %v", s.name, st, d.WindowOpen(), s.state, s.open)
				}
			}
		})
	}
}

func TestOTPBecomesProvisioningServerOTP(t *testing.T) {
	d := newDevice(t, "16", false, nil, func(c *Config) { c.OTP = "from-the-flag" })
	if rv := d.SetProvisioningServerOTP("Branch-OTP-9"); rv != PTSuccess {
		t.Fatal(rv)
	}
	if got, want := d.GetSetupService().OTPBase64, base64.StdEncoding.EncodeToString([]byte("Branch-OTP-9")); got != want {
		t.Fatalf("ProvisioningServerOTP %q, want %q", got, want)
	}
	// The value is a secret: neither a refusal nor the status shows it.
	secret := "Secret-" + strings.Repeat("z", 30)
	if rv := d.SetProvisioningServerOTP(secret); rv != PTInvalidParameter {
		t.Fatal(rv)
	}
	b, _ := json.Marshal(d.Status())
	if bytes.Contains(b, []byte("Branch-OTP-9")) || bytes.Contains(b, []byte(secret)) {
		t.Fatalf("status shows the OTP: %s", b)
	}
	var audit []string
	for _, a := range d.Audit() {
		audit = append(audit, a.Event)
	}
	if strings.Join(audit, ",") != "otp-set" {
		t.Fatalf("audit %v", audit)
	}
}

func TestStartConfigurationPreconditions(t *testing.T) {
	noSuffix := newDevice(t, "16", false, nil, func(c *Config) { c.DNSSuffix = "" })
	if rv := noSuffix.StartConfiguration(); rv != PTNotReady {
		t.Fatalf("without a DNS suffix: %d", rv)
	}
	noSuffix.SetDHCPLease(net.IPv4(10, 0, 0, 7), "branch.example.com")
	if rv := noSuffix.StartConfiguration(); rv != PTSuccess {
		t.Fatalf("after DHCP option 15: %d", rv)
	}

	expired := newDevice(t, "16", true, nil, func(c *Config) { c.Faults.WindowExpired = true })
	if expired.WindowOpen() {
		t.Fatal("expired-window fault: window open at boot")
	}
	if rv := expired.StartConfiguration(); rv != PTSuccess || !expired.WindowOpen() || !expired.RemoteReachable() {
		t.Fatalf("an agent reopens an expired window: %d, open %v", rv, expired.WindowOpen())
	}

	rebooting := newDevice(t, "16", false, nil, nil)
	rebooting.Reboot()
	if rv := rebooting.StartConfiguration(); rv != PTNotReady {
		t.Fatalf("while rebooting: %d", rv)
	}
}

// Post-provisioning refuses every setup command; MEI unprovision works only
// in client control mode.
func TestHostInterfaceAfterActivation(t *testing.T) {
	ha1 := hex.EncodeToString(HA1("admin", "Digest:X", "Adm1n-Pass!"))
	ccm := newDevice(t, "16", false, nil, nil)
	if rv := ccm.UnprovisionFromHost(); rv != PTInvalidPTMode {
		t.Fatalf("unprovision while pre-provisioning: %d", rv)
	}
	if rv := ccm.Setup(2, ha1); rv != HBSSuccess {
		t.Fatal(rv)
	}
	for name, op := range map[string]func() int{
		"SetProvisioningServerOTP": func() int { return ccm.SetProvisioningServerOTP("Branch-OTP-1") },
		"StartConfiguration":       ccm.StartConfiguration,
		"StopConfiguration":        ccm.StopConfiguration,
	} {
		if rv := op(); rv != PTInvalidPTMode {
			t.Errorf("%s in post-provisioning: %d", name, rv)
		}
	}
	if rv := ccm.UnprovisionFromHost(); rv != PTSuccess {
		t.Fatalf("unprovision in CCM: %d", rv)
	}
	if st, mode := ccm.State(); st != PreProvisioning || mode != ModeNone {
		t.Fatalf("after MEI unprovision %s/%s", st, mode)
	}

	acm := newDevice(t, "16", true, nil, nil)
	_ = acm.SetMEBxPassword("Mebx-Pass1")
	if rv := acm.CommitChanges(); rv != PTSuccess {
		t.Fatal(rv)
	}
	if rv := acm.UnprovisionFromHost(); rv != PTInvalidPTMode {
		t.Fatalf("unprovision in ACM: %d", rv)
	}
}

func TestLocalPasswordRule(t *testing.T) {
	p, _ := firmware.Lookup("16")
	for _, tc := range []struct {
		pw string
		ok bool
	}{
		{strings.Repeat("p", 32), true},
		{strings.Repeat("p", 33), false},
		{"pass\x00word", false},
	} {
		_, err := New(Config{Profile: p, LocalPassword: tc.pw, Log: slog.New(slog.DiscardHandler)})
		if (err == nil) != tc.ok {
			t.Errorf("local password of %d bytes: %v", len(tc.pw), err)
		}
	}
	d := newDevice(t, "16", false, nil, nil)
	if user, pw := d.LocalSystemAccount(); user != "$$OsAdmin" || len(pw) != 32 || pw != d.LocalPassword() {
		t.Fatalf("random local account %q/%d characters", user, len(pw))
	}
}

func TestLANInterfaceSettings(t *testing.T) {
	mac := net.HardwareAddr{0x02, 1, 2, 3, 4, 5}
	d := newDevice(t, "16", false, nil, func(c *Config) { c.MAC, c.IPv4 = mac, net.IPv4(192, 0, 2, 10) })
	s, rv := d.LANInterfaceSettings(0)
	if rv != PTSuccess || !s.Enabled || s.DHCP || s.DHCPMode != 0 || !s.LinkUp || s.MAC.String() != mac.String() || !s.IPv4.Equal(net.IPv4(192, 0, 2, 10)) {
		t.Fatalf("static: %+v, %d", s, rv)
	}
	d.SetDHCPLease(net.IPv4(10, 0, 0, 9), "branch.example.com")
	if s, _ := d.LANInterfaceSettings(0); !s.DHCP || s.DHCPMode != 1 || !s.IPv4.Equal(net.IPv4(10, 0, 0, 9)) {
		t.Fatalf("DHCP: %+v", s)
	}
	if _, rv := d.LANInterfaceSettings(1); rv != PTInvalidParameter {
		t.Fatalf("wireless interface: %d", rv)
	}
	var u hello.UUID
	if got := MACFor(u); got[0]&0x03 != 0x02 {
		t.Fatalf("derived MAC %s is not locally administered unicast", got)
	}
}

func TestStatusIdentityFields(t *testing.T) {
	root := testChain(t, "prov.example.com").Root().Raw
	d := newDevice(t, "11.8", false, root, func(c *Config) { c.PKISuffix = "pki.example.net" })
	s := d.Status()
	if s.Build != "3510" || s.SKU != "16392" || s.AMTVersion != "11.8.55" || s.DNSSuffix != "pki.example.net" {
		t.Fatalf("identity %+v", s)
	}
	if len(s.Hashes) != 24 {
		t.Fatalf("%d hashes", len(s.Hashes))
	}
	first, custom := s.Hashes[0], s.Hashes[23]
	if first.Algorithm != "SHA256" || !first.Default || !first.Active || first.Hash != "c3846bf24b9e93ca64274c0ec67c1ecc5e024ffcacd2d74019350e81fe546ae4" {
		t.Fatalf("default entry %+v", first)
	}
	if custom.Default || !custom.Active || custom.Hash != hex.EncodeToString(firmware.Digest(hello.SHA256, root)) || custom.Name != "test" {
		t.Fatalf("custom entry %+v", custom)
	}
	legacy := newDevice(t, "3.0", false, nil, nil).Status()
	if legacy.Hashes[0].Algorithm != "SHA1" || len(legacy.Hashes[0].Hash) != 40 {
		t.Fatalf("legacy entry %+v", legacy.Hashes[0])
	}
}
