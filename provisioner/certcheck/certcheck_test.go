package certcheck

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/branchbox/branchbox/provisioner/democa"
)

func TestRunCertCheck(t *testing.T) {
	dir := t.TempDir()
	ca, err := democa.Generate(democa.Options{Domain: "branch1.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	files, err := ca.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	other, err := democa.Generate(democa.Options{Domain: "branch1.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	otherKey := filepath.Join(dir, "other-key.pem")
	if err := os.WriteFile(otherKey, other.KeyPEM(), 0o600); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name     string
		args     []string
		code     int
		wantLine string
	}{
		{"good", []string{"--domain", "branch1.example.com", "--chain", files.Chain, "--key", files.Key}, 0, "PASS key-match"},
		{"good without key", []string{"--domain", "branch1.example.com", "--chain", files.Chain}, 0, "WARN key-match"},
		{"wrong domain", []string{"--domain", "shop.other.org", "--chain", files.Chain}, 1, "FAIL domain-suffix"},
		{"foreign key", []string{"--domain", "branch1.example.com", "--chain", files.Chain, "--key", otherKey}, 1, "FAIL key-match"},
		{"missing file", []string{"--domain", "a.example.com", "--chain", filepath.Join(dir, "nope.pem")}, 1, "FAIL parse"},
		{"no domain", []string{"--chain", files.Chain}, 2, ""},
		{"for AMT 11", []string{"--domain", "branch1.example.com", "--chain", files.Chain, "--amt-version", "11.8"}, 0, "PASS signature-hash"},
		{"bad version", []string{"--domain", "branch1.example.com", "--chain", files.Chain, "--amt-version", "x"}, 2, ""},
		{"bad flag", []string{"--bogus"}, 2, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := RunCertCheck(c.args, &out, &errOut)
			if code != c.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, c.code, out.String(), errOut.String())
			}
			if c.wantLine == "" {
				return
			}
			found := false
			for _, line := range strings.Split(out.String(), "\n") {
				if strings.Join(strings.Fields(line), " ") != "" && strings.HasPrefix(strings.Join(strings.Fields(line), " "), c.wantLine) {
					found = true
				}
			}
			if !found {
				t.Errorf("no line starting %q in:\n%s", c.wantLine, out.String())
			}
		})
	}
}
