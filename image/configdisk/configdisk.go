// Package configdisk makes the disk an appliance image boots from: an ext4
// file system holding branchbox.yaml, every file it names, an optional
// network.conf, and an empty branchbox-data/ where the box keeps its state.
package configdisk

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/branchbox/branchbox/appliance"
	"github.com/branchbox/branchbox/appliance/config"
	"github.com/branchbox/branchbox/image/boot"
)

// DefaultSize leaves room for raft's 16 MiB log segments and snapshots.
const DefaultSize = 256 << 20

// Options say what goes on the disk.
type Options struct {
	Config  string // branchbox.yaml to ship (any file name)
	Network string // optional network.conf
	Out     string // the image file, replaced
	Size    int64  // bytes; 0 means DefaultSize
}

// Build validates the config as `branchbox check-config` does, gathers
// the files it names and writes the disk image.
func Build(o Options) error {
	cfg, err := appliance.LoadConfig(o.Config)
	if err != nil {
		return fmt.Errorf("%s is not valid:\n%w", o.Config, err)
	}
	files, err := referenced(cfg)
	if err != nil {
		return err
	}
	stage, err := os.MkdirTemp("", "branchbox-config-disk-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	if err := copyInto(o.Config, filepath.Join(stage, boot.ConfigFile)); err != nil {
		return err
	}
	for _, rel := range files {
		if err := copyInto(filepath.Join(cfg.Dir, rel), filepath.Join(stage, rel)); err != nil {
			return err
		}
	}
	if o.Network != "" {
		data, err := os.ReadFile(o.Network)
		if err != nil {
			return err
		}
		if _, err := boot.ParseNetwork(data); err != nil {
			return fmt.Errorf("%s: %w", o.Network, err)
		}
		if err := copyInto(o.Network, filepath.Join(stage, boot.NetworkFile)); err != nil {
			return err
		}
	}
	if err := os.Mkdir(filepath.Join(stage, boot.DataDir), 0o700); err != nil {
		return err
	}
	return mkfs(stage, o.Out, o.Size)
}

// referenced lists the files the config names, relative to its directory.
// The box sees only the disk, so an absolute path, or one leaving the
// config's directory, could never resolve there.
func referenced(cfg *config.Config) ([]string, error) {
	type ref struct{ field, path string }
	var refs []ref
	if c := cfg.Node.Cluster; c != nil {
		refs = append(refs, ref{"node.cluster.join_token_file", c.JoinTokenFile})
	}
	for i, s := range cfg.Sites {
		if s.ProvisioningCert != nil {
			refs = append(refs,
				ref{fmt.Sprintf("sites[%d].provisioning_cert.chain", i), s.ProvisioningCert.Chain},
				ref{fmt.Sprintf("sites[%d].provisioning_cert.key", i), s.ProvisioningCert.Key})
		}
	}
	for i, p := range cfg.Profiles {
		refs = append(refs,
			ref{fmt.Sprintf("profiles[%d].admin_password_file", i), p.AdminPasswordFile},
			ref{fmt.Sprintf("profiles[%d].mebx_password_file", i), p.MEBxPasswordFile})
	}
	var out []string
	var errs []error
	for _, r := range refs {
		switch {
		case r.path == "":
		case filepath.IsAbs(r.path):
			errs = append(errs, fmt.Errorf("%s: %s is absolute; the box sees only the config disk, so name it relative to the config file", r.field, r.path))
		case !filepath.IsLocal(r.path):
			errs = append(errs, fmt.Errorf("%s: %s leaves the config file's directory, so it cannot go on the config disk", r.field, r.path))
		case filepath.Clean(r.path) == boot.ConfigFile || strings.HasPrefix(filepath.Clean(r.path), boot.DataDir+string(filepath.Separator)) || filepath.Clean(r.path) == boot.NetworkFile:
			errs = append(errs, fmt.Errorf("%s: %s is a name the disk reserves", r.field, r.path))
		default:
			out = append(out, filepath.Clean(r.path))
		}
	}
	return out, errors.Join(errs...)
}

func copyInto(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	// Keys and passwords among them: nothing on the disk is for others.
	return os.WriteFile(dst, data, 0o600)
}

// mkfs writes an ext4 image populated from dir (mke2fs -d), no root or
// loop device needed.
func mkfs(dir, out string, size int64) error {
	if size == 0 {
		size = DefaultSize
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		return errors.New("mkfs.ext4 not found: install the Debian package e2fsprogs (make deps does)")
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	os.Remove(out)
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	f.Close()
	cmd := exec.Command("mkfs.ext4", "-q", "-F", "-L", "branchbox", "-E", "root_owner=0:0", "-d", dir, out)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4: %w: %s", err, b)
	}
	return nil
}
