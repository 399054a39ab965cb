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

// fileSystems the image can read a config disk from, in the order tried.
var fileSystems = []string{"ext4", "vfat"}

// MountDisks mounts every block device (whole disks and partitions) that
// holds a file system the image knows under root/<dev>, read-write, and
// returns them sorted by device name, so "the first disk" is vda before
// vdb. LoadDrivers has waited for disks still being probed.
func MountDisks(sysBlock, devDir, root string, log *slog.Logger) []Disk {
	names := blockDevices(sysBlock)
	var disks []Disk
	for _, name := range names {
		dir := filepath.Join(root, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			log.Warn("mount point", "dir", dir, "err", err)
			continue
		}
		var errs []error
		for _, fs := range fileSystems {
			err := unix.Mount(filepath.Join(devDir, name), dir, fs, 0, "")
			if err == nil {
				disks = append(disks, Disk{Dev: name, FS: fs, Mount: dir})
				errs = nil
				break
			}
			errs = append(errs, fmt.Errorf("%s: %w", fs, err))
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
