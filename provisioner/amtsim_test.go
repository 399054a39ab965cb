package provisioner

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/provisioner/certrules"
	"github.com/branchbox/branchbox/provisioner/democa"
	"github.com/branchbox/branchbox/provisioner/hello"
)

// These tests run the provisioner against the project's device simulator
// (tests/amtsim), built from source, which checks the chain as firmware
// does and shares no code with the provisioner.

var (
	simOnce sync.Once
	simBin  string
	simErr  error
)

func amtsimBinary(t testing.TB) string {
	t.Helper()
	simOnce.Do(func() {
		dir, err := os.MkdirTemp("", "amtsim-bin")
		if err != nil {
			simErr = err
			return
		}
		simBin = filepath.Join(dir, "amtsim")
		out, err := exec.Command("go", "build", "-o", simBin, "../tests/amtsim/cmd/amtsim").CombinedOutput()
		if err != nil {
			simErr = fmt.Errorf("building amtsim: %v\n%s", err, out)
		}
	})
	if simErr != nil {
		t.Fatal(simErr)
	}
	return simBin
}

// simulate runs `amtsim serve` as device n of env e and waits until it listens.
func (e *env) simulate(n int, args ...string) {
	e.t.Helper()
	bin := amtsimBinary(e.t)
	ctx, cancel := context.WithCancel(context.Background())
	full := append([]string{"serve", "--listen", ip(n) + ":" + strconv.Itoa(e.port), "--uuid", uuidOf(n), "--strict-acl-element"}, args...)
	cmd := exec.CommandContext(ctx, bin, full...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if e.t.Failed() {
			e.t.Logf("amtsim %v stderr:\n%s", full, stderr.String())
		}
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			if !signalled && strings.Contains(sc.Text(), "listening on") {
				ready <- true
				signalled = true
			}
		}
		if !signalled {
			ready <- false
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			e.t.Fatalf("amtsim exited: %s", stderr.String())
		}
	case <-time.After(20 * time.Second):
		e.t.Fatal("amtsim did not start")
	}
}

func TestAgainstAMTSim(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatal("the go tool is needed to build tests/amtsim")
	}
	root := demoCA(t).RootSHA256()
	cases := []struct {
		name    string
		sim     []string
		opt     envOpt
		sha1    bool // old firmware holds SHA-1 custom hashes only
		otp     bool // register an OTP and give the simulator the same one
		badOTP  bool // give the simulator a different one
		state   string
		errPart string
	}{
		{name: "bare metal, AMT 16", sim: []string{"--amt-version", "16.1"}, state: cluster.DeviceActivated},
		{name: "bare metal, AMT 11", sim: []string{"--amt-version", "11.8"}, state: cluster.DeviceActivated},
		{name: "bare metal, AMT 3.0", sim: []string{"--amt-version", "3.0"}, sha1: true, state: cluster.DeviceActivated},
		{name: "bare metal, AMT 2.6", sim: []string{"--amt-version", "2.6"}, sha1: true, state: cluster.DeviceActivated},
		{name: "digest during RCFG", sim: []string{"--rcfg-digest"}, state: cluster.DeviceActivated},
		{name: "OTP matches", otp: true, state: cluster.DeviceActivated},
		{name: "OTP differs", otp: true, badOTP: true, state: cluster.DeviceFailed, errPart: "one-time password mismatch"},
		{name: "dropped commit response", sim: []string{"--fault", "drop-commit-response"}, state: cluster.DeviceActivated},
		{name: "TCP reset mid-session", sim: []string{"--fault", "reset-at=3"}, state: cluster.DeviceActivated},
		{name: "slow device", sim: []string{"--fault", "slow=200ms"}, state: cluster.DeviceActivated},
		{name: "certificate for another domain", sim: []string{"--domain", "shop.other.org"}, state: cluster.DeviceFailed, errPart: "refused the provisioning certificate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var opts []envOpt
			if c.opt != nil {
				opts = append(opts, c.opt)
			}
			e := newEnv(t, opts...)
			h := e.helloFor(1, true)
			hash := root
			if c.sha1 {
				hash = certrules.RootHashes(demoCA(t).Root).SHA1
				h.Hashes = []hello.Hash{{Alg: hello.SHA1, Sum: mustHex(t, hash)}}
			}
			args := append([]string{"--domain", domain, "--custom-root-hash", hash}, c.sim...)
			if c.otp {
				reg, err := RegisterDevice(context.Background(), e.st, Registration{UUID: uuidOf(1)}, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				otp := reg.OTP
				if c.badOTP {
					otp = "NOT" + otp
				}
				args = append(args, "--otp", otp)
			}
			e.simulate(1, args...)
			e.send(1, h)
			d := e.wait(uuidOf(1), c.state)
			t.Logf("%s: %s", d.State, d.LastError)
			if !strings.Contains(d.LastError, c.errPart) {
				t.Errorf("last error %q, want %q in it", d.LastError, c.errPart)
			}
			if c.state == cluster.DeviceActivated && d.AMTVersion == "" {
				t.Error("no AMT version recorded")
			}
		})
	}
}

func TestAMTSimRebootDuringCommit(t *testing.T) {
	e := newEnv(t)
	e.simulate(1, "--domain", domain, "--custom-root-hash", demoCA(t).RootSHA256(), "--fault", "reboot-during-activation=300ms")
	e.send(1, e.helloFor(1, true))
	first := e.wait(uuidOf(1), cluster.DeviceFailed)
	t.Logf("first session: %s", first.LastError)
	// The device comes back in setup mode and says hello again.
	time.Sleep(500 * time.Millisecond)
	h := e.helloFor(1, true)
	h.RetryCount = 1
	e.send(1, h)
	e.wait(uuidOf(1), cluster.DeviceActivated)
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAMTSim4096BitIntermediate: the firmware verifies every certificate
// of the chain with RSA up to 2048 bits, so the provisioner refuses the
// site's chain before it connects back — the device never sees it.
func TestAMTSim4096BitIntermediate(t *testing.T) {
	ca, err := democa.Generate(democa.Options{Domain: domain, IntermediateBits: 4096})
	if err != nil {
		t.Fatal(err)
	}
	for _, version := range []string{"16.1", "11.8"} {
		t.Run("AMT "+version, func(t *testing.T) {
			e := newEnv(t, func(s *cluster.Site, o *Options) { s.CertChainPEM = string(ca.ChainPEM()) })
			key, _ := e.st.Seal(ca.KeyPEM())
			site, _ := e.st.Site("lab")
			site.CertKey = key
			if err := e.st.Apply(context.Background(), cluster.PutSite{Site: site}); err != nil {
				t.Fatal(err)
			}
			e.simulate(1, "--domain", domain, "--custom-root-hash", ca.RootSHA256(), "--amt-version", version)
			u, _ := hello.ParseUUID(uuidOf(1))
			h := hello.Hello{Version: hello.VersionPKI, UUID: u, Hashes: []hello.Hash{{Alg: hello.SHA256, Sum: mustHex(t, ca.RootSHA256())}}}
			e.send(1, h)
			d := e.wait(uuidOf(1), cluster.DeviceFailed)
			if !strings.Contains(d.LastError, "key-size") || !strings.Contains(d.LastError, "4096-bit") {
				t.Errorf("last error %q, want the key-size rule", d.LastError)
			}
		})
	}
}

// TestAMTSimProfileFeatures applies profiles to the simulator and reads
// back what the device reports, and what its 16993 serves.
func TestAMTSimProfileFeatures(t *testing.T) {
	cases := []struct {
		name    string
		profile cluster.Profile
		sim     []string
		want    simFeatures
	}{
		{"everything on, TLS", cluster.Profile{SOL: true, IDER: true, KVM: true, UserConsent: "kvm", TLS: true}, nil,
			simFeatures{SOL: true, IDER: true, Listener: true, KVM: true, UserConsent: "kvm", TLS: simTLS{Enabled: true, LocalEnabled: true}}},
		{"everything off", cluster.Profile{UserConsent: "none"}, nil,
			simFeatures{UserConsent: "none"}},
		{"SOL only, consent for everything", cluster.Profile{SOL: true, UserConsent: "all"}, nil,
			simFeatures{SOL: true, Listener: true, UserConsent: "all"}},
		{"TLS with every commit answer lost", cluster.Profile{KVM: true, UserConsent: "all", TLS: true}, []string{"--fault", "drop-commit-response"},
			simFeatures{Listener: true, KVM: true, UserConsent: "all", TLS: simTLS{Enabled: true, LocalEnabled: true}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			prof, _ := e.st.Profile("standard")
			prof.SOL, prof.IDER, prof.KVM, prof.UserConsent, prof.TLS = c.profile.SOL, c.profile.IDER, c.profile.KVM, c.profile.UserConsent, c.profile.TLS
			if err := e.st.Apply(context.Background(), cluster.PutProfile{Profile: prof}); err != nil {
				t.Fatal(err)
			}
			status := freeAddr(t)
			e.simulate(1, append([]string{"--domain", domain, "--custom-root-hash", demoCA(t).RootSHA256(), "--status-listen", status}, c.sim...)...)
			e.send(1, e.helloFor(1, true))
			d := e.wait(uuidOf(1), cluster.DeviceActivated)

			got := simStatus(t, status)
			wantNames := []string(nil)
			if c.profile.TLS {
				wantNames = []string{d.FQDN}
			}
			if !slices.Equal(got.TLS.DNSNames, wantNames) {
				t.Errorf("amtsim serves a certificate for %v, want %v", got.TLS.DNSNames, wantNames)
			}
			got.TLS.CertSHA256, got.TLS.DNSNames = "", nil
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("amtsim reports %+v\nwant %+v", got, c.want)
			}
			var steps []string
			for _, a := range e.st.Audit(0) {
				if a.Subject == uuidOf(1) {
					steps = append(steps, strings.TrimPrefix(a.Action, "activation."))
					t.Logf("%s %s: %s", a.Time.Format("15:04:05.000"), a.Action, a.Detail)
				}
			}
			if c.profile.TLS != slices.Contains(steps, "tls-verify") {
				t.Errorf("audit steps %v; TLS in profile %v", steps, c.profile.TLS)
			}
			if c.profile.TLS {
				checkServedCertificate(t, e, net.JoinHostPort(ip(1), strconv.Itoa(e.port)), d.FQDN)
			}
		})
	}
}

type simTLS struct {
	Enabled      bool     `json:"enabled"`
	LocalEnabled bool     `json:"local_enabled"`
	CertSHA256   string   `json:"cert_sha256"`
	DNSNames     []string `json:"cert_dns_names"`
}

type simFeatures struct {
	SOL         bool   `json:"sol"`
	IDER        bool   `json:"ider"`
	Listener    bool   `json:"redirection_listener"`
	KVM         bool   `json:"kvm"`
	UserConsent string `json:"user_consent"`
	TLS         simTLS `json:"tls"`
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func simStatus(t *testing.T, addr string) simFeatures {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ds []struct {
		Features simFeatures `json:"features"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ds); err != nil || len(ds) != 1 {
		t.Fatalf("amtsim status: %v (%d devices)", err, len(ds))
	}
	return ds[0].Features
}

// checkServedCertificate connects as a console would: TLS verified
// against the management CA from the API, for the device's FQDN.
func checkServedCertificate(t *testing.T, e *env, addr, fqdn string) {
	t.Helper()
	mux := http.NewServeMux()
	(&Handlers{Store: e.st}).Mount(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/tls/ca", nil))
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rec.Body.Bytes()) {
		t.Fatalf("GET /api/v1/tls/ca: %d %q", rec.Code, rec.Body.String())
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: fqdn})
	if err != nil {
		t.Fatalf("TLS to the device as %s: %v", fqdn, err)
	}
	conn.Close()
}
