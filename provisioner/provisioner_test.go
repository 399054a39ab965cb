package provisioner

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/provisioner/democa"
	"github.com/branchbox/branchbox/provisioner/hello"
	"github.com/branchbox/branchbox/provisioner/internal/fakeamt"
)

const (
	domain    = "branch1.example.com"
	adminPass = "Adm1n-P4ss!"
)

var (
	caOnce   sync.Once
	caShared *democa.Chain
	caErr    error
)

func demoCA(t testing.TB) *democa.Chain {
	t.Helper()
	caOnce.Do(func() { caShared, caErr = democa.Generate(democa.Options{Domain: domain}) })
	if caErr != nil {
		t.Fatal(caErr)
	}
	return caShared
}

type env struct {
	t     testing.TB
	st    *cluster.Store
	p     *Provisioner
	hello string // listener address
	port  int    // devices' TLS port
}

type envOpt func(site *cluster.Site, o *Options)

func newEnv(t testing.TB, opts ...envOpt) *env {
	t.Helper()
	ca := demoCA(t)
	st := cluster.NewMemory()
	key, err := st.Seal(ca.KeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := st.Seal([]byte(adminPass))
	ctx := context.Background()
	if err := st.Apply(ctx, cluster.PutProfile{Profile: cluster.Profile{Name: "standard", AdminPassword: pw, TimeSync: true}}); err != nil {
		t.Fatal(err)
	}
	site := cluster.Site{
		Name: "lab", Domain: domain, Subnet: "127.0.0.0/8", Profile: "standard",
		CertChainPEM: string(ca.ChainPEM()), CertKey: key, AllowTemplate: true,
	}
	// Devices listen on 127.0.0.N:port, all on one port number.
	probe, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	port := probe.Addr().(*net.TCPAddr).Port
	probe.Close()
	reg := prometheus.NewRegistry()
	o := Options{
		Store: st, Metrics: reg, NodeID: "test", DevicePort: port, ReadTimeout: 2 * time.Second,
		Session: SessionTuning{CommitWait: time.Millisecond, VerifyFor: 2 * time.Second, Backoff: 10 * time.Millisecond, RequestTimeout: 5 * time.Second},
	}
	for _, f := range opts {
		f(&site, &o)
	}
	if err := st.Apply(ctx, cluster.PutSite{Site: site}); err != nil {
		t.Fatal(err)
	}
	p := New(o)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(sctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &env{t: t, st: st, p: p, hello: ln.Addr().String(), port: port}
}

// device starts a fake AMT on 127.0.0.<n>.
func (e *env) device(n int) *fakeamt.Device {
	e.t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip(n), strconv.Itoa(e.port)))
	if err != nil {
		e.t.Fatal(err)
	}
	d := fakeamt.New()
	d.Serve(e.t, ln)
	return d
}

func ip(n int) string { return fmt.Sprintf("127.0.%d.%d", n/250, n%250+2) }

func uuidOf(n int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", n) }

func (e *env) helloFor(n int, trustDemo bool) hello.Hello {
	u, _ := hello.ParseUUID(uuidOf(n))
	other, _ := hex.DecodeString("c3846bf24b9e93ca64274c0ec67c1ecc5e024ffcacd2d74019350e81fe546ae4")
	h := hello.Hello{AdminCredentialsSet: true, Version: hello.VersionPKI, UUID: u, Hashes: []hello.Hash{{Alg: hello.SHA256, Sum: other}}}
	if trustDemo {
		root, _ := hex.DecodeString(demoCA(e.t).RootSHA256())
		h.Hashes = append(h.Hashes, hello.Hash{Alg: hello.SHA256, Sum: root})
	}
	return h
}

// send writes one hello from 127.0.0.<n> the way a device does: connect,
// write once, close.
func (e *env) send(n int, h hello.Hello) {
	e.t.Helper()
	wire, err := h.Marshal()
	if err != nil {
		e.t.Fatal(err)
	}
	e.sendRaw(n, wire)
}

func (e *env) sendRaw(n int, wire []byte) {
	e.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip(n))}}
	c, err := d.Dial("tcp", e.hello)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := c.Write(wire); err != nil {
		e.t.Fatal(err)
	}
	c.Close()
}

func (e *env) wait(uuid string, state string) cluster.Device {
	e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if d, ok := e.st.Device(uuid); ok && d.State == state {
			return d
		}
		time.Sleep(10 * time.Millisecond)
	}
	d, _ := e.st.Device(uuid)
	e.t.Fatalf("device %s is %q (last error %q), want %s", uuid, d.State, d.LastError, state)
	return d
}

func (e *env) hellos(result string) float64 {
	return counterValue(e.p.m.hellos.WithLabelValues(result))
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func TestBareMetalHelloToActivated(t *testing.T) {
	e := newEnv(t)
	dev := e.device(1)
	e.send(1, e.helloFor(1, true))
	d := e.wait(uuidOf(1), cluster.DeviceActivated)
	if d.FQDN != "amt-00000000."+domain || d.AMTVersion != "16.1.25" || d.IP != ip(1) || d.Site != "lab" || d.LastError != "" {
		t.Errorf("device %+v", d)
	}
	dev.Lock()
	ha1 := dev.AdminHA1
	dev.Unlock()
	if ha1 != fakeamt.MD5Hex("admin:"+dev.Realm+":"+adminPass) {
		t.Error("device did not get the profile's admin password")
	}
	var steps []string
	for _, a := range e.st.Audit(0) {
		if a.Subject == uuidOf(1) {
			steps = append(steps, strings.TrimPrefix(a.Action, "activation."))
		}
	}
	want := "hello name general-settings software-identity setup-service mebx-password admin-acl time-sync commit verify " +
		"redirection kvm redirection-listener user-consent activated"
	if got := strings.Join(steps, " "); got != want {
		t.Errorf("audit steps\n got %s\nwant %s", got, want)
	}
	// The test profile turns every feature off and leaves consent at kvm.
	dev.Lock()
	features := []string{dev.Redirection, dev.KVM, dev.Listener, dev.OptIn}
	dev.Unlock()
	if want := []string{"32768", "3", "false", "1"}; !slices.Equal(features, want) {
		t.Errorf("device features (redirection, kvm, listener, opt-in) = %v, want %v", features, want)
	}
	if n := counterValue(e.p.m.activations.WithLabelValues("activated")); n != 1 {
		t.Errorf("activations metric %v", n)
	}
}

func TestFailures(t *testing.T) {
	cases := []struct {
		name  string
		opt   envOpt
		trust bool
		setup func(e *env, d *fakeamt.Device)
		want  string // in last_error
	}{
		{name: "root hash not offered", trust: false, want: "fails firmware rule root-hash: root \"branchbox demo root CA\""},
		{name: "certificate for another domain", trust: true, opt: func(s *cluster.Site, o *Options) { s.Domain = "shop.other.org" },
			want: "domain-suffix"},
		{name: "no name and template not allowed", trust: true, opt: func(s *cluster.Site, o *Options) { s.AllowTemplate = false },
			want: "does not allow its naming template"},
		{name: "missing profile", trust: true, opt: func(s *cluster.Site, o *Options) { s.Profile = "gone" }, want: `profile "gone"`},
		{name: "OTP mismatch", trust: true, setup: func(e *env, d *fakeamt.Device) {
			if _, err := RegisterDevice(context.Background(), e.st, Registration{UUID: uuidOf(1)}, time.Now()); err != nil {
				t.Fatal(err)
			}
			d.Lock()
			d.OTP = "SOMEONE-ELSES"
			d.Unlock()
		}, want: "one-time password mismatch"},
		{name: "device refuses default credentials", trust: true, setup: func(e *env, d *fakeamt.Device) {
			d.Lock()
			d.FactoryPass = "changed-in-mebx"
			d.Unlock()
		}, want: "every credential refused"},
		{name: "profile step fails after activation", trust: true, setup: func(e *env, d *fakeamt.Device) {
			// The fake device has no certificate store.
			prof, _ := e.st.Profile("standard")
			prof.TLS = true
			if err := e.st.Apply(context.Background(), cluster.PutProfile{Profile: prof}); err != nil {
				t.Fatal(err)
			}
		}, want: "activated in admin control mode, but applying the profile failed: tls-key: "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var opts []envOpt
			if c.opt != nil {
				opts = append(opts, c.opt)
			}
			e := newEnv(t, opts...)
			d := e.device(1)
			if c.setup != nil {
				c.setup(e, d)
			}
			e.send(1, e.helloFor(1, c.trust))
			dev := e.wait(uuidOf(1), cluster.DeviceFailed)
			if !strings.Contains(dev.LastError, c.want) {
				t.Errorf("last error %q, want it to contain %q", dev.LastError, c.want)
			}
			if c.name == "root hash not offered" && len(dev.Hashes) != 1 {
				t.Errorf("offered hashes not kept: %v", dev.Hashes)
			}
		})
	}
}

func TestOTPActivationConsumesOnce(t *testing.T) {
	e := newEnv(t)
	d := e.device(1)
	reg, err := RegisterDevice(context.Background(), e.st, Registration{UUID: strings.ToUpper(uuidOf(1)), AMTVersion: "11.8"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(reg.OTP) != otpLength {
		t.Fatalf("otp %q", reg.OTP)
	}
	d.Lock()
	d.OTP = reg.OTP
	d.Unlock()
	e.send(1, e.helloFor(1, true))
	e.wait(uuidOf(1), cluster.DeviceActivated)
	o, _ := e.st.OTP(uuidOf(1))
	if o.ConsumedBy == "" {
		t.Error("OTP not consumed")
	}
	// The same device in setup mode again (e.g. unprovisioned) needs a new OTP.
	d.Lock()
	d.State = "1"
	d.Unlock()
	e.send(1, e.helloFor(1, true))
	dev := e.wait(uuidOf(1), cluster.DeviceFailed)
	if !strings.Contains(dev.LastError, "already used") {
		t.Errorf("reused OTP: %q", dev.LastError)
	}
}

func TestPSKHelloIsRecordedAsUnsupported(t *testing.T) {
	e := newEnv(t)
	pairs, err := GeneratePSKs(context.Background(), e.st, "lab", 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h := e.helloFor(1, false)
	h.Version, h.Hashes, h.PID = hello.VersionPSK, nil, pairs[0].PID
	e.send(1, h)
	dev := e.wait(uuidOf(1), cluster.DeviceFailed)
	if !strings.HasPrefix(dev.LastError, "PSK session not supported") || !strings.Contains(dev.LastError, `site "lab"`) || dev.PID != pairs[0].PID {
		t.Errorf("device %+v", dev)
	}
}

func TestIgnoredHellos(t *testing.T) {
	e := newEnv(t, func(s *cluster.Site, o *Options) { s.Subnet = "10.99.0.0/24" })
	e.send(1, e.helloFor(1, true))
	e.sendRaw(1, []byte("GET / HTTP/1.0\r\n\r\n"))
	deadline := time.Now().Add(5 * time.Second)
	for e.hellos("outside") < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := e.hellos("outside"); n != 2 {
		t.Errorf("outside = %v", n)
	}
	if _, ok := e.st.Device(uuidOf(1)); ok {
		t.Error("a hello from outside every site was recorded")
	}
}

func TestInvalidAndRateLimited(t *testing.T) {
	e := newEnv(t, func(s *cluster.Site, o *Options) { o.HelloBurst = 3; o.HellosPerMinute = 1 })
	e.sendRaw(1, []byte("garbage that is not a hello at all"))
	e.sendRaw(1, make([]byte, hello.MaxSize+10))
	e.sendRaw(1, []byte{0, 0, 3})
	e.sendRaw(1, []byte{0, 0, 3}) // fourth within the burst of 3
	deadline := time.Now().Add(5 * time.Second)
	for e.hellos("invalid")+e.hellos("rate_limited") < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if e.hellos("invalid") != 3 || e.hellos("rate_limited") != 1 {
		t.Errorf("invalid %v, rate limited %v", e.hellos("invalid"), e.hellos("rate_limited"))
	}
}

func TestDuplicateHellosStartOneSession(t *testing.T) {
	e := newEnv(t)
	d := e.device(1)
	d.SetDelay(30 * time.Millisecond)
	for range 5 {
		e.send(1, e.helloFor(1, true))
	}
	e.wait(uuidOf(1), cluster.DeviceActivated)
	if n := d.Count("AMT_SetupAndConfigurationService/CommitChanges"); n != 1 {
		t.Errorf("%d commits", n)
	}
	if n := d.Count("AMT_GeneralSettings/Get"); n != 1 {
		t.Errorf("%d sessions started", n)
	}
	if e.hellos("duplicate") != 4 {
		t.Errorf("duplicates %v", e.hellos("duplicate"))
	}
}

func TestManyDevicesAtOnce(t *testing.T) {
	const n = 40
	e := newEnv(t, func(s *cluster.Site, o *Options) { o.MaxSessions = 8 })
	devs := make([]*fakeamt.Device, n)
	for i := range n {
		devs[i] = e.device(i)
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.send(i, e.helloFor(i, true))
			e.send(i, e.helloFor(i, true))
		}()
	}
	wg.Wait()
	for i := range n {
		e.wait(uuidOf(i), cluster.DeviceActivated)
	}
	for i, d := range devs {
		if c := d.Count("AMT_SetupAndConfigurationService/CommitChanges"); c != 1 {
			t.Errorf("device %d committed %d times", i, c)
		}
	}
}

func TestNamesFromInventoryAndLease(t *testing.T) {
	e := newEnv(t, func(s *cluster.Site, o *Options) { s.AllowTemplate = false })
	e.device(1)
	e.device(2)
	csv := "uuid,hostname,site,profile\n" + uuidOf(1) + ",Reception-PC,lab,standard\n"
	if n, err := ImportInventory(context.Background(), e.st, strings.NewReader(csv), time.Now(), nil); err != nil || n != 1 {
		t.Fatalf("import: %d, %v", n, err)
	}
	now := time.Now()
	if err := e.st.Apply(context.Background(), cluster.LeaseCAS{Lease: cluster.Lease{
		IP: ip(2), ClientID: "01aabbccddeeff", Hostname: "desk-7.corp", Site: "lab", State: cluster.LeaseBound,
		Start: now, Expires: now.Add(time.Hour),
	}, Time: now}); err != nil {
		t.Fatal(err)
	}
	e.send(1, e.helloFor(1, true))
	e.send(2, e.helloFor(2, true))
	if d := e.wait(uuidOf(1), cluster.DeviceActivated); d.FQDN != "reception-pc."+domain || d.Profile != "standard" {
		t.Errorf("inventory device %+v", d)
	}
	if d := e.wait(uuidOf(2), cluster.DeviceActivated); d.FQDN != "desk-7."+domain {
		t.Errorf("lease device fqdn %q", d.FQDN)
	}
}
