package boot

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	// ConfigFile is what makes a disk the config disk.
	ConfigFile = "branchbox.yaml"
	// DataDir on an ext4 disk makes that disk the persistent store.
	DataDir = "branchbox-data"
)

// Disk is a mounted file system on a block device.
type Disk struct {
	Dev   string // vda, sda1, ...
	FS    string // ext4 | vfat
	Mount string
}

// Has reports whether the disk's root holds name.
func (d Disk) Has(name string) bool {
	_, err := os.Stat(filepath.Join(d.Mount, name))
	return err == nil
}

// FileSystem is a file system a disk may hold and the kernel modules that
// mount it.
type FileSystem struct {
	Type    string
	Modules []string
}

// ParseFileSystems reads the image's file system list
// (image/modules-fs.txt): one per line, its type then its modules, in the
// order mounts try them.
func ParseFileSystems(data []byte) ([]FileSystem, error) {
	var out []FileSystem
	for n, line := range strings.Split(string(data), "\n") {
		line, _, _ = strings.Cut(line, "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 2 {
			return nil, fmt.Errorf("line %d: want TYPE MODULE..., got %q", n+1, line)
		}
		out = append(out, FileSystem{Type: f[0], Modules: f[1:]})
	}
	return out, nil
}

// MountDisks mounts every block device (whole disks and partitions) that
// holds one of fss under root/<dev>, read-write, and returns them sorted
// by device name, so "the first disk" is vda before vdb. LoadDrivers has
// waited for disks still being probed. A file system's modules are loaded
// (by load) before its first mount is tried: a box whose disks are all
// ext4 never loads FAT.
func MountDisks(sysBlock, devDir, root string, fss []FileSystem, load func(modules []string), log *slog.Logger) []Disk {
	names := blockDevices(sysBlock)
	loaded := map[string]bool{}
	var disks []Disk
	for _, name := range names {
		dir := filepath.Join(root, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			log.Warn("mount point", "dir", dir, "err", err)
			continue
		}
		var errs []error
		for _, fs := range fss {
			if !loaded[fs.Type] {
				load(fs.Modules)
				loaded[fs.Type] = true
			}
			err := unix.Mount(filepath.Join(devDir, name), dir, fs.Type, 0, "")
			if err == nil {
				disks = append(disks, Disk{Dev: name, FS: fs.Type, Mount: dir})
				errs = nil
				break
			}
			errs = append(errs, fmt.Errorf("%s: %w", fs.Type, err))
		}
		if errs != nil {
			// A whole disk that only holds partitions, a blank disk: not ours.
			os.Remove(dir)
			log.Debug("not mountable", "dev", name, "err", errors.Join(errs...))
		}
	}
	return disks
}

// blockDevices lists the block devices worth trying: no loop, RAM or
// optical devices.
func blockDevices(sysBlock string) []string {
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, "loop") || strings.HasPrefix(n, "ram") || strings.HasPrefix(n, "sr") || strings.HasPrefix(n, "zram") {
			continue
		}
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// ConfigDisk is the first disk that holds branchbox.yaml.
func ConfigDisk(disks []Disk) (Disk, bool) {
	for _, d := range disks {
		if d.Has(ConfigFile) {
			return d, true
		}
	}
	return Disk{}, false
}

// DataDisk is the first ext4 disk with a branchbox-data directory: ext4
// because raft's log and the 0600 key files need POSIX semantics, which
// FAT lacks.
func DataDisk(disks []Disk) (Disk, bool) {
	for _, d := range disks {
		if d.FS != "ext4" {
			continue
		}
		if st, err := os.Stat(filepath.Join(d.Mount, DataDir)); err == nil && st.IsDir() {
			return d, true
		}
	}
	return Disk{}, false
}

// Unmount releases disks that hold neither the config nor the data.
func Unmount(disks []Disk, keep ...Disk) {
	for _, d := range disks {
		if slices.Contains(keep, d) {
			continue
		}
		if unix.Unmount(d.Mount, 0) == nil {
			os.Remove(d.Mount)
		}
	}
}
