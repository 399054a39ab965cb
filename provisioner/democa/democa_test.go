package democa

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/branchbox/branchbox/provisioner/certrules"
)

func TestGeneratedChainPassesEveryRule(t *testing.T) {
	c, err := Generate(Options{Domain: "branch1.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Leaf.Subject.CommonName != "setup.branch1.example.com" {
		t.Errorf("leaf CN %q", c.Leaf.Subject.CommonName)
	}
	results := certrules.CheckPEM("branch1.example.com", c.ChainPEM(), c.KeyPEM(), c.Leaf.NotBefore.Add(2*time.Hour))
	for _, r := range results {
		// A demo root is never in the firmware's default table.
		if r.Status != certrules.Pass && r.Rule != certrules.RuleRootHash {
			t.Errorf("%s", r)
		}
	}
	if !certrules.RootHashes(c.Root).Matches(c.RootSHA256()) {
		t.Error("RootSHA256 does not match the root")
	}
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	if code := Run([]string{"--domain", "demo.example.com", "--out", dir}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	hash, err := os.ReadFile(dir + "/root.sha256")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "root-sha256 "+strings.TrimSpace(string(hash))) {
		t.Errorf("output %q lacks the root hash %s", out.String(), hash)
	}
	st, err := os.Stat(dir + "/key.pem")
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key.pem mode %v, %v", st.Mode(), err)
	}
	if code := Run(nil, &out, &errOut); code != 2 {
		t.Errorf("no flags: exit %d", code)
	}
}
