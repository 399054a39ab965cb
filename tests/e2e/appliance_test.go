package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// freePort returns a loopback port nothing listens on right now.
func freePort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// box is one branchbox serve process on loopback.
type box struct {
	t    *testing.T
	bin  string
	cfg  string
	env  []string
	cmd  *exec.Cmd
	logs bytes.Buffer
}

func (b *box) start() {
	b.t.Helper()
	args := []string{"serve"}
	if b.cfg != "" {
		args = append(args, "--config", b.cfg)
	}
	b.cmd = exec.Command(b.bin, args...)
	b.cmd.Env = append(os.Environ(), b.env...)
	b.cmd.Stdout, b.cmd.Stderr = &b.logs, &b.logs
	if err := b.cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() {
		if b.cmd.ProcessState == nil {
			b.cmd.Process.Kill()
			b.cmd.Wait()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := b.ctl("--output", "json", "status")
		var st struct{ Role, Leader, Node string }
		if err == nil && json.Unmarshal([]byte(out), &st) == nil && st.Role == "leader" && st.Leader == st.Node {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("branchbox did not become leader: %v %s\nlogs:\n%s", err, out, b.logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (b *box) ctl(args ...string) (string, error) {
	if b.cfg != "" {
		args = append([]string{"--config", b.cfg}, args...)
	}
	cmd := exec.Command(b.bin, append([]string{"ctl"}, args...)...)
	cmd.Env = append(os.Environ(), b.env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (b *box) mustCtl(args ...string) string {
	b.t.Helper()
	out, err := b.ctl(args...)
	if err != nil {
		b.t.Fatalf("ctl %v: %v\n%s", args, err, out)
	}
	return out
}

func TestVersion(t *testing.T) {
	want, err := os.ReadFile("../../VERSION")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(branchboxBinary(t), "version").Output()
	if err != nil || strings.TrimSpace(string(out)) != strings.TrimSpace(string(want)) {
		t.Fatalf("version = %q (%v), want %q", out, err, want)
	}
}

func TestCheckConfigReportsEveryMistake(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bad.yaml")
	writeFile(t, cfg, `
node: {id: box1, api: "127.0.0.1:8443"}
dns: {listen: ":53", ttl: 5 minutes}
sites:
  - name: branch1
    domain: branch1.example.com
    interface: eth1
    subnet: 10.1.0.0/24
    range: [10.1.0.100, 10.1.0.250]
    router: 10.1.0.150
    provisioning_cert: {chain: /nonexistent/chain.pem, key: key.pem}
  - name: branch2
    domain: branch1.example.com
    interface: eth2
    subnet: 10.1.0.0/16
    range: [10.1.5.1, 10.1.5.9]
`, 0o600)
	writeFile(t, filepath.Join(dir, "key.pem"), "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", 0o600)
	out, err := exec.Command(branchboxBinary(t), "check-config", cfg).Output()
	if err == nil {
		t.Fatalf("check-config accepted a broken config:\n%s", out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []string{"dns.ttl:", "sites[0].range:", "sites[0].provisioning_cert.chain:", "sites[1].domain:", "sites[1].subnet:"}
	if len(lines) != len(want) {
		t.Fatalf("want %d lines, got %d:\n%s", len(want), len(lines), out)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want it to start with %q", i+1, lines[i], w)
		}
	}
}

// TestEmbeddedDefault runs serve with no config at all, as the README's
// first command does.
func TestEmbeddedDefault(t *testing.T) {
	data := t.TempDir()
	b := &box{t: t, bin: branchboxBinary(t), env: []string{"BRANCHBOX_DATA=" + data}}
	b.start()
	out := b.mustCtl("status")
	for _, w := range []string{"role         leader", "dns", "provisioner"} {
		if !strings.Contains(out, w) {
			t.Errorf("status lacks %q:\n%s", w, out)
		}
	}
	if out := b.mustCtl("cluster", "status"); !strings.Contains(out, "leader") {
		t.Errorf("cluster status has no leader:\n%s", out)
	}
	fi, err := os.Stat(filepath.Join(data, "api.token"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("api.token: %v %v", fi, err)
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- b.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, b.logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no clean shutdown within 15s of SIGTERM")
	}
}

// TestStateSurvivesKillAndSecretsStaySealed writes through the API, kills
// the box with SIGKILL, restarts it, and then looks for every secret in
// the logs, the API's answers and every file under data_dir.
func TestStateSurvivesKillAndSecretsStaySealed(t *testing.T) {
	dir := t.TempDir()
	bin := branchboxBinary(t)
	if out, err := exec.Command(bin, "demo-ca", "--domain", "lab1.example.com", "--out", dir).CombinedOutput(); err != nil {
		t.Fatalf("demo-ca: %v\n%s", err, out)
	}
	const adminPW = "Zq9!secret-ADMIN-pw"
	writeFile(t, filepath.Join(dir, "admin.pass"), adminPW+"\n", 0o600)
	keyPEM, err := os.ReadFile(filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	// A line from the middle of the private key is as secret as the whole.
	keyLines := strings.Split(strings.TrimSpace(string(keyPEM)), "\n")
	keySecret := keyLines[len(keyLines)/2]

	cfg := filepath.Join(dir, "branchbox.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
node: {id: box1, data_dir: data, api: "127.0.0.1:%d"}
dns: {listen: "127.0.0.1:%d"}
dhcp: {relay_listen: "127.0.0.1:%d"}
provisioner: {listen: "127.0.0.1:%d"}
sites:
  - name: lab1
    domain: lab1.example.com
    relay: true
    subnet: 10.250.1.0/24
    range: [10.250.1.100, 10.250.1.199]
    router: 10.250.1.1
    provisioning_cert: {chain: chain.pem, key: key.pem}
    profile: standard
profiles:
  - name: standard
    admin_password_file: admin.pass
`, freePort(t, "tcp"), freePort(t, "udp"), freePort(t, "udp"), freePort(t, "tcp")), 0o600)
	if out, err := exec.Command(bin, "check-config", cfg).CombinedOutput(); err != nil {
		t.Fatalf("check-config: %v\n%s", err, out)
	}

	b := &box{t: t, bin: bin, cfg: cfg}
	b.start()
	writeFile(t, filepath.Join(dir, "site2.json"), `{"name": "lab2", "domain": "lab2.example.com", "relay": true,
		"subnet": "10.250.2.0/24", "range": ["10.250.2.100", "10.250.2.199"], "router": "10.250.2.1"}`, 0o600)
	b.mustCtl("sites", "add", filepath.Join(dir, "site2.json"))
	otpOut := b.mustCtl("--output", "json", "devices", "register", "12345678-9abc-def0-1122-334455667788", "--site", "lab1")
	var reg struct{ OTP string }
	if err := json.Unmarshal([]byte(otpOut), &reg); err != nil || len(reg.OTP) < 8 {
		t.Fatalf("register: %v %q", err, otpOut)
	}

	b.cmd.Process.Signal(syscall.SIGKILL)
	b.cmd.Wait()
	firstLogs := b.logs.String()

	b2 := &box{t: t, bin: bin, cfg: cfg}
	b2.start()
	sites := b2.mustCtl("sites")
	for _, w := range []string{"lab1", "lab2.example.com"} {
		if !strings.Contains(sites, w) {
			t.Errorf("after kill -9 the sites lack %q:\n%s", w, sites)
		}
	}
	if devs := b2.mustCtl("devices"); !strings.Contains(devs, "12345678-9abc-def0-1122-334455667788") {
		t.Errorf("registered device lost:\n%s", devs)
	}

	var seen strings.Builder
	seen.WriteString(firstLogs)
	seen.WriteString(b2.logs.String())
	for _, args := range [][]string{{"status"}, {"sites"}, {"devices"}, {"leases"}, {"audit"}, {"cluster", "status"},
		{"devices", "show", "12345678-9abc-def0-1122-334455667788"}} {
		seen.WriteString(b2.mustCtl(append([]string{"--output", "json"}, args...)...))
	}
	files := map[string][]byte{"logs and API output": []byte(seen.String())}
	filepath.Walk(filepath.Join(dir, "data"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			files[p], _ = os.ReadFile(p)
		}
		return nil
	})
	for where, content := range files {
		for name, secret := range map[string]string{"admin password": adminPW, "certificate key": keySecret, "one-time password": reg.OTP} {
			if bytes.Contains(content, []byte(secret)) {
				t.Errorf("%s found in %s", name, where)
			}
		}
	}
}
