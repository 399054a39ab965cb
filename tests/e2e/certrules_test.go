package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/branchbox/branchbox/tests/certcases"
)

// TestCertRulesCheckAndSiteAPI runs the certificate cases shared with
// amtsim's firmware (tests/certcases) through the two places an admin meets
// the rules: `branchbox cert check` FAILs exactly the chains devices refuse,
// naming the rule, and `ctl sites add` refuses them with the same words.
// The root-hash rule needs a device's hash table, so the site API cannot
// judge it; the provisioner does at hello time (provisioner tests).
func TestCertRulesCheckAndSiteAPI(t *testing.T) {
	RequireRoot(t)
	bin := branchboxBinary(t)
	ns := NewNS(t, "certs")
	ns.MustRun("ip", "link", "add", "bbt0", "type", "veth", "peer", "name", "bbt1")
	ns.MustRun("ip", "link", "set", "bbt1", "up")
	ns.MustRun("ip", "addr", "add", "10.77.0.1/24", "dev", "bbt0")
	ns.MustRun("ip", "link", "set", "bbt0", "up")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "branchbox.yaml")
	writeFile(t, cfg, fmt.Sprintf(`node:
  id: certs
  data_dir: %s
  api: 127.0.0.1:8443
dns:
  listen: 127.0.0.1:5353
provisioner:
  listen: 127.0.0.1:9971
`, filepath.Join(dir, "data")), 0o644)
	box := ns.Start(bin, "serve", "--config", cfg)
	waitLeader(t, ns, bin, cfg, box)

	for i, c := range certcases.All {
		t.Run(c.Name, func(t *testing.T) {
			m, err := c.Material()
			if err != nil {
				t.Fatal(err)
			}
			want := c.Refused(0)
			caseDir := filepath.Join(dir, fmt.Sprintf("case%02d", i))
			if err := os.Mkdir(caseDir, 0o700); err != nil {
				t.Fatal(err)
			}
			chain, key := filepath.Join(caseDir, "chain.pem"), filepath.Join(caseDir, "key.pem")
			writeFile(t, chain, string(m.ChainPEM()), 0o644)
			writeFile(t, key, string(m.KeyPEM()), 0o600)

			out, err := exec.Command(bin, "cert", "check", "--domain", m.Domain, "--chain", chain, "--key", key,
				"--trusted-hash", m.TrustedSHA256()).CombinedOutput()
			code := exitCode(t, err)
			reason, failed := failLine(string(out), want)
			switch {
			case want == "" && code != 0:
				t.Fatalf("devices accept this chain; cert check exit %d:\n%s", code, out)
			case want != "" && (code != 1 || !failed):
				t.Fatalf("devices refuse it for %s; cert check exit %d:\n%s", want, code, out)
			}
			if want == certcases.RootHash {
				return
			}

			site := filepath.Join(caseDir, "site.yaml")
			writeFile(t, site, fmt.Sprintf(`name: probe
domain: %s
interface: bbt0
subnet: 10.77.0.0/24
range: [10.77.0.100, 10.77.0.199]
provisioning_cert: {chain: %s, key: %s}
`, m.Domain, chain, key), 0o644)
			added, err := ns.Run(bin, "ctl", "--config", cfg, "sites", "add", site)
			switch {
			case want == "" && err != nil:
				t.Fatalf("site refused a chain devices accept: %v", err)
			case want != "" && err == nil:
				t.Fatalf("site accepted a chain devices refuse for %s:\n%s", want, added)
			case want != "" && !strings.Contains(err.Error(), "rule "+want+": "+reason):
				t.Fatalf("ctl sites add did not refuse with cert check's words %q:\n%v", "rule "+want+": "+reason, err)
			case want != "":
				t.Logf("refused: FAIL %s %s", want, reason)
			}
		})
	}
	if leaked := box.Output(); strings.Contains(leaked, "PRIVATE KEY") {
		t.Error("a private key reached the log")
	}
}

// failLine finds cert check's FAIL line for rule and returns its reason.
func failLine(out, rule string) (string, bool) {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == "FAIL" && f[1] == rule {
			return strings.Join(f[2:], " "), true
		}
	}
	return "", false
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	t.Fatal(err)
	return -1
}

func waitLeader(t *testing.T, ns *NS, bin, cfg string, box *Proc) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := ns.Run(bin, "ctl", "--config", cfg, "status")
		if err == nil && strings.Contains(out, "leader") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("branchbox did not become leader: %v\n%s", err, box.Output())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
