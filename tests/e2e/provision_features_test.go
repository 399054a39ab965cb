package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestProvisionProfileFeatures activates devices on two sites whose
// profiles differ — one with SOL, IDER, KVM, consent for KVM and TLS, one
// with everything off — and checks what the simulated firmware ended up
// with, and that a console trusting GET /api/v1/tls/ca reaches the TLS
// devices by name.
func TestProvisionProfileFeatures(t *testing.T) {
	on := &labSite{Name: "feat", Octet: 84, Domain: "branch4.e2e.example"}
	off := &labSite{Name: "plain", Octet: 85, Domain: "branch5.e2e.example"}
	l := newLab(t, "", on, off)
	l.reconfigure(func(cfg string) string {
		pass := filepath.Join(l.dir, "admin.pass")
		i := strings.Index(cfg, "profiles:\n")
		cfg = cfg[:i] + fmt.Sprintf(`profiles:
  - name: e2e
    admin_password_file: %[1]s
    sol: true
    ider: true
    kvm: true
    user_consent: kvm
    tls: true
  - name: off
    admin_password_file: %[1]s
    sol: false
    ider: false
    kvm: false
    user_consent: none
    tls: false
`, pass)
		// The second site's block is the last one naming a profile.
		j := strings.LastIndex(cfg, "    profile: e2e\n")
		return cfg[:j] + "    profile: off\n" + cfg[j+len("    profile: e2e\n"):]
	})

	fOn := l.startFleet("feat", 2, true)
	fOff := l.startFleet("plain", 1, true)
	l.waitStates(3*time.Minute, map[*fleet]string{fOn: "activated", fOff: "activated"})

	caPEM := l.managementCA()
	if got := l.app.MustRun(l.bin, "ctl", "--config", l.cfg, "tls", "ca"); got != caPEM {
		t.Errorf("ctl tls ca printed\n%s\nwant the API's\n%s", got, caPEM)
	}
	caFile := filepath.Join(l.dir, "management-ca.pem")
	writeFile(t, caFile, caPEM, 0o644)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(caPEM)) {
		t.Fatalf("GET /api/v1/tls/ca is not a PEM certificate:\n%s", caPEM)
	}

	t.Run("everything on, TLS", func(t *testing.T) {
		want := simFeatureState{SOL: true, IDER: true, Listener: true, KVM: true, UserConsent: "kvm", TLS: simTLSState{Enabled: true, LocalEnabled: true}}
		for _, s := range fOn.featureStatus() {
			d := l.device(s.UUID)
			if wantFQDN := "amt-" + s.UUID[:8] + "." + on.Domain; d.FQDN != wantFQDN {
				t.Errorf("%s: fqdn %q, want %q", s.UUID, d.FQDN, wantFQDN)
			}
			if !slices.Equal(s.Features.TLS.DNSNames, []string{d.FQDN}) {
				t.Errorf("%s: amtsim serves a certificate for %v, want [%s]", s.UUID, s.Features.TLS.DNSNames, d.FQDN)
			}
			s.Features.TLS.DNSNames = nil
			if !reflect.DeepEqual(s.Features, want) {
				t.Errorf("%s: amtsim reports %+v\nwant %+v", s.UUID, s.Features, want)
			}
			l.checkTLSByName(t, s.IP, d.FQDN, roots, caFile)
			checkHistory(t, l, []simDevice{{UUID: s.UUID}}, "done", "activated in admin control mode")
		}
		checkAuditSteps(t, l, fOn.devices(), []string{"redirection", "kvm", "redirection-listener", "user-consent",
			"tls-key", "tls-certificate", "tls-context", "tls-settings", "tls-commit", "tls-verify"}, nil)
	})

	t.Run("everything off", func(t *testing.T) {
		want := simFeatureState{UserConsent: "none"}
		for _, s := range fOff.featureStatus() {
			if !reflect.DeepEqual(s.Features, want) {
				t.Errorf("%s: amtsim reports %+v\nwant %+v", s.UUID, s.Features, want)
			}
		}
		checkAuditSteps(t, l, fOff.devices(), []string{"redirection", "kvm", "redirection-listener", "user-consent"}, []string{"tls-key"})
		checkAdminLogin(t, l, fOff, fOff.devices())
	})

	if strings.Contains(l.box.Output(), "PRIVATE KEY") {
		t.Error("a private key shows up in the appliance's log")
	}
}

// reconfigure rewrites the lab's config and restarts branchbox on it, as
// an admin changing profiles would; the store keeps everything else.
func (l *lab) reconfigure(edit func(string) string) {
	l.t.Helper()
	b, err := os.ReadFile(l.cfg)
	if err != nil {
		l.t.Fatal(err)
	}
	writeFile(l.t, l.cfg, edit(string(b)), 0o644)
	if err := l.box.Signal(syscall.SIGTERM); err != nil {
		l.t.Fatal(err)
	}
	select {
	case <-l.box.done:
	case <-time.After(30 * time.Second):
		l.t.Fatalf("branchbox did not stop:\n%s", tail(l.box.Output(), 30))
	}
	l.box = l.app.Start(l.bin, "serve", "--config", l.cfg)
	l.box.WaitOutput(l.t, "branchbox ready", 60*time.Second)
}

// managementCA fetches GET /api/v1/tls/ca the way a console does: with
// the API token, from inside the appliance namespace.
func (l *lab) managementCA() string {
	l.t.Helper()
	token, err := os.ReadFile(filepath.Join(l.dir, "data", "api.token"))
	if err != nil {
		l.t.Fatal(err)
	}
	return l.app.MustRun("curl", "-sf", "--max-time", "20", "-H", "Authorization: Bearer "+strings.TrimSpace(string(token)),
		"http://127.0.0.1:18443/api/v1/tls/ca")
}

// checkTLSByName connects to the device's 16993 by its FQDN as a console
// would: curl verifying the certificate with the CA file and logging in
// with digest, and Go's TLS client checking the served leaf; the plain
// port 16992 no longer answers.
func (l *lab) checkTLSByName(t *testing.T, ip, fqdn string, roots *x509.CertPool, caFile string) {
	t.Helper()
	out, err := l.app.Run("curl", "-s", "--max-time", "20", "--cacert", caFile, "--resolve", fqdn+":16993:"+ip,
		"--digest", "-u", "admin:"+labAdminPassword, "-H", "Content-Type: application/soap+xml;charset=UTF-8",
		"--data-binary", setupServiceGet, "-w", "\n%{http_code}", "https://"+fqdn+":16993/wsman")
	if err != nil || !strings.HasSuffix(out, "\n200") || !strings.Contains(out, "ProvisioningState>2<") {
		t.Errorf("curl --cacert <management CA> https://%s:16993 (%s): %v\n%s", fqdn, ip, err, out)
	}
	err = l.app.Do(func() error {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", net.JoinHostPort(ip, "16993"),
			&tls.Config{RootCAs: roots, ServerName: fqdn})
		if err != nil {
			return err
		}
		defer conn.Close()
		if leaf := conn.ConnectionState().PeerCertificates[0]; !slices.Equal(leaf.DNSNames, []string{fqdn}) {
			return fmt.Errorf("leaf names %v", leaf.DNSNames)
		}
		return nil
	})
	if err != nil {
		t.Errorf("TLS to %s as %s against the management CA: %v", ip, fqdn, err)
	}
	if out, err := l.app.Run("curl", "-s", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://"+ip+":16992/wsman"); err == nil {
		t.Errorf("plain HTTP on %s:16992 still answers (%s) with TLS on and non-secure connections refused", ip, out)
	}
}

const setupServiceGet = `<?xml version="1.0" encoding="UTF-8"?>` +
	`<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd">` +
	`<s:Header><a:Action s:mustUnderstand="true">http://schemas.xmlsoap.org/ws/2004/09/transfer/Get</a:Action>` +
	`<a:To s:mustUnderstand="true">/wsman</a:To>` +
	`<w:ResourceURI s:mustUnderstand="true">http://intel.com/wbem/wscim/1/amt-schema/1/AMT_SetupAndConfigurationService</w:ResourceURI>` +
	`<a:MessageID s:mustUnderstand="true">uuid:00000000-8086-8086-8086-000000000002</a:MessageID>` +
	`<a:ReplyTo><a:Address>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo>` +
	`</s:Header><s:Body/></s:Envelope>`

// checkAuditSteps wants each listed activation step exactly once per
// device, and none of the absent ones.
func checkAuditSteps(t *testing.T, l *lab, sim []simDevice, present, absent []string) {
	t.Helper()
	n := map[string]map[string]int{}
	for _, e := range l.audit() {
		if n[e.Subject] == nil {
			n[e.Subject] = map[string]int{}
		}
		n[e.Subject][strings.TrimPrefix(e.Action, "activation.")]++
	}
	for _, s := range sim {
		for _, step := range present {
			if n[s.UUID][step] != 1 {
				t.Errorf("%s: %d audit entries for step %s, want 1", s.UUID, n[s.UUID][step], step)
			}
		}
		for _, step := range absent {
			if n[s.UUID][step] != 0 {
				t.Errorf("%s: audit has step %s", s.UUID, step)
			}
		}
	}
}

type simTLSState struct {
	Enabled      bool     `json:"enabled"`
	LocalEnabled bool     `json:"local_enabled"`
	DNSNames     []string `json:"cert_dns_names"`
}

type simFeatureState struct {
	SOL         bool        `json:"sol"`
	IDER        bool        `json:"ider"`
	Listener    bool        `json:"redirection_listener"`
	KVM         bool        `json:"kvm"`
	UserConsent string      `json:"user_consent"`
	TLS         simTLSState `json:"tls"`
}

type simFeatureStatus struct {
	UUID     string          `json:"uuid"`
	IP       string          `json:"ip"`
	Features simFeatureState `json:"features"`
}

// featureStatus reads the fleet's status endpoint (from inside its
// namespace, dialled on Do's thread) with the features of each device.
func (f *fleet) featureStatus() []simFeatureStatus {
	f.l.t.Helper()
	var ds []simFeatureStatus
	err := f.site.lan.GetJSON(f.status, &ds)
	if err != nil {
		f.l.t.Fatalf("amtsim status: %v", err)
	}
	return ds
}
