package configdisk

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const siteConfig = `node:
  id: box1
dns:
  listen: ":53"
profiles:
  - name: standard
    admin_password_file: %s
`

func TestBuildShipsReferencedFiles(t *testing.T) {
	if _, err := exec.LookPath("debugfs"); err != nil {
		t.Fatal("debugfs not found: install the Debian package e2fsprogs")
	}
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "secrets"), 0o700)
	os.WriteFile(filepath.Join(dir, "secrets", "admin.pass"), []byte("Disk-Test-Pass!7\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "box.yaml"), []byte(strings.Replace(siteConfig, "%s", "secrets/admin.pass", 1)), 0o600)
	os.WriteFile(filepath.Join(dir, "net.conf"), []byte("eth0 10.0.0.2/24\n"), 0o600)
	out := filepath.Join(dir, "config.img")
	if err := Build(Options{Config: filepath.Join(dir, "box.yaml"), Network: filepath.Join(dir, "net.conf"), Out: out, Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/branchbox.yaml", "/network.conf", "/secrets/admin.pass", "/branchbox-data"} {
		b, err := exec.Command("debugfs", "-R", "stat "+path, out).CombinedOutput()
		if err != nil || strings.Contains(string(b), "File not found") {
			t.Errorf("%s not on the disk: %v\n%s", path, err, b)
		}
	}
}

func TestBuildRefuses(t *testing.T) {
	cases := []struct{ name, pass, network, want string }{
		{name: "absolute path", pass: "ABS", want: "admin.pass is absolute; the box sees only the config disk"},
		{name: "outside the directory", pass: "../admin.pass", want: "profiles[0].admin_password_file: ../admin.pass leaves the config file's directory"},
		{name: "bad network.conf", pass: "admin.pass", network: "eth0 10.0.0.2\n", want: "network.conf line 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			sub := filepath.Join(dir, "cfg")
			os.MkdirAll(sub, 0o700)
			for _, p := range []string{filepath.Join(sub, "admin.pass"), filepath.Join(dir, "admin.pass")} {
				os.WriteFile(p, []byte("Disk-Test-Pass!7\n"), 0o600)
			}
			pass := tc.pass
			if pass == "ABS" {
				pass = filepath.Join(dir, "admin.pass")
			}
			cfg := filepath.Join(sub, "box.yaml")
			os.WriteFile(cfg, []byte(strings.Replace(siteConfig, "%s", pass, 1)), 0o600)
			o := Options{Config: cfg, Out: filepath.Join(dir, "config.img"), Size: 8 << 20}
			if tc.network != "" {
				o.Network = filepath.Join(dir, "network.conf")
				os.WriteFile(o.Network, []byte(tc.network), 0o600)
			}
			err := Build(o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}
