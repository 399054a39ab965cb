// Command boxinit is the appliance image's uinit: u-root's init starts it
// once the kernel modules are loaded, and it never returns. It mounts the
// disks, takes the config and the persistent data directory from them,
// addresses the interfaces, then runs /bin/branchbox serve, restarting it
// whenever it exits, and prints the status banner on the console each time
// branchbox is serving. Enter on the console opens a shell.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/branchbox/branchbox/appliance/apiclient"
	"github.com/branchbox/branchbox/appliance/config"
	"github.com/branchbox/branchbox/image/boot"
)

const (
	branchbox = "/bin/branchbox"
	shell     = "/bin/sh"
	mountRoot = "/mnt"
	// runConfig holds the copy of the config disk branchbox reads.
	runConfig = "/etc/branchbox"
	// ramData is data_dir when no disk can keep it.
	ramData = "/var/lib/branchbox"
	// fsModulesFile lists the file system modules (image/modules-fs.txt).
	fsModulesFile = "/lib/modules-fs.conf"
	// diskWait bounds the wait for a disk controller's first disk.
	diskWait = 3 * time.Second
	// readyLog is in the line branchbox logs once every service runs.
	readyLog = `msg="branchbox ready"`
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "boot")
	// Uptimes on the console show where a boot's seconds go.
	log.Info("boxinit started", "uptime", uptimeStr())
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		log.Error("reading the kernel command line", "err", err)
	}
	cl, errs := boot.ParseCmdline(string(cmdline))
	for _, e := range errs {
		log.Error(e.Error())
	}

	mods := loadDrivers(log)
	disks := boot.MountDisks("/sys/class/block", "/dev", mountRoot, fileSystems(log), func(names []string) {
		if mods != nil {
			mods.Load(names, log)
		}
	}, log)
	if len(disks) > 0 {
		log.Info("disks mounted", "uptime", uptimeStr())
	}
	cfgDisk, haveCfg := boot.ConfigDisk(disks)
	dataDisk, haveData := boot.DataDisk(disks)
	var keep []boot.Disk
	if haveCfg {
		keep = append(keep, cfgDisk)
	}
	if haveData {
		keep = append(keep, dataDisk)
	}
	boot.Unmount(disks, keep...)

	dataDir, dataNote := ramData, ramData+" (IN RAM: lost at power-off)"
	if haveData {
		dataDir = filepath.Join(dataDisk.Mount, boot.DataDir)
		dataNote = fmt.Sprintf("%s (persistent, on %s)", dataDir, dataDisk.Dev)
	} else {
		log.Warn("NO PERSISTENT DISK: branchbox keeps its state in RAM and loses it at power-off; " +
			"attach an ext4 disk with a " + boot.DataDir + "/ directory (make config-disk makes one)")
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		log.Error("data directory", "dir", dataDir, "err", err)
	}

	var ifs []boot.Iface
	if haveCfg {
		if data, err := os.ReadFile(filepath.Join(cfgDisk.Mount, boot.NetworkFile)); err == nil {
			if ifs, err = boot.ParseNetwork(data); err != nil {
				log.Error("config disk", "err", err)
			}
		}
	}
	ifs = boot.WithCmdline(ifs, cl)
	if len(ifs) == 0 {
		log.Warn("no interface addressed: put " + boot.NetworkFile + " on the config disk or branchbox.ip= on the kernel command line")
	}
	if err := boot.Configure(ifs, 10*time.Second, log); err != nil {
		log.Error("network", "err", err)
	}

	var cfgPath string
	member := "single"
	cfgNote := "no disk holds " + boot.ConfigFile + ": embedded lab default (loopback only, no sites)"
	if haveCfg {
		path, err := prepareConfig(cfgDisk, boot.Overrides{NodeID: cl.Node, DataDir: dataDir}, log)
		if err != nil {
			// branchbox serve reports a broken file better than we can; it
			// runs on the unmodified copy and the supervisor retries.
			log.Error("config disk", "dev", cfgDisk.Dev, "err", err)
		}
		cfgPath = path
		if data, err := os.ReadFile(path); err == nil {
			member = boot.Member(data)
		}
		cfgNote = fmt.Sprintf("%s:/%s (%s)", cfgDisk.Dev, boot.ConfigFile, cfgDisk.FS)
	} else {
		log.Warn(cfgNote)
		os.Setenv("BRANCHBOX_DATA", dataDir)
	}

	go console(log)
	log.Info("starting branchbox", "uptime", uptimeStr())
	sup := &boot.Supervisor{
		Command: func() *exec.Cmd {
			args := []string{"serve"}
			if cfgPath != "" {
				args = append(args, "--config", cfgPath)
			}
			cmd := exec.Command(branchbox, args...)
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			return cmd
		},
		ReadyLine: readyLog,
		Started: func(ctx context.Context, run int, ready <-chan struct{}) {
			b, ok := waitServing(ctx, ready, cfgPath)
			if !ok {
				return
			}
			b.Run, b.Member, b.Config, b.Data = run, member, cfgNote, dataNote
			b.Addresses = addresses()
			b.Uptime = uptime()
			b.Write(os.Stdout)
		},
		MinBackoff: time.Second, MaxBackoff: 30 * time.Second, StableAfter: time.Minute,
		Log: log,
	}
	sup.Run(context.Background())
}

// loadDrivers loads the kernel modules for the hardware present (the image
// lists none for u-root's init to load).
func loadDrivers(log *slog.Logger) *boot.Modules {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		log.Error("uname", "err", err)
		return nil
	}
	mods, err := boot.OpenModules(filepath.Join("/lib/modules", unix.ByteSliceToString(uts.Release[:])))
	if err != nil {
		log.Error("kernel modules", "err", err)
		return nil
	}
	loaded := boot.LoadDrivers(mods, "/sys/bus", "/sys/class/block", diskWait, log)
	log.Info("kernel modules loaded", "modules", strings.Join(loaded, ","), "uptime", uptimeStr())
	return mods
}

// fileSystems are those a config or data disk may hold.
func fileSystems(log *slog.Logger) []boot.FileSystem {
	data, err := os.ReadFile(fsModulesFile)
	if err == nil {
		var fss []boot.FileSystem
		if fss, err = boot.ParseFileSystems(data); err == nil {
			return fss
		}
	}
	log.Error("file system list", "file", fsModulesFile, "err", err)
	return []boot.FileSystem{{Type: "ext4"}, {Type: "vfat"}}
}

// prepareConfig copies the config disk's files to runConfig and applies
// the image's overrides to the copy of branchbox.yaml.
func prepareConfig(d boot.Disk, o boot.Overrides, log *slog.Logger) (string, error) {
	path := filepath.Join(runConfig, boot.ConfigFile)
	if err := os.MkdirAll(runConfig, 0o755); err != nil {
		return path, err
	}
	if err := boot.CopyConfigTree(d.Mount, runConfig); err != nil {
		return path, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return path, err
	}
	out, was, err := boot.Override(data, o)
	if err != nil {
		return path, err
	}
	if o.NodeID != "" && was.NodeID != o.NodeID {
		log.Info("node.id from the kernel command line", "id", o.NodeID, "file_had", was.NodeID)
	}
	if was.DataDir != "" && was.DataDir != o.DataDir {
		log.Info("node.data_dir is where the image keeps state", "data_dir", o.DataDir, "file_had", was.DataDir)
	}
	return path, os.WriteFile(path, out, 0o600)
}

// waitServing waits for branchbox's ready log line, then polls the admin
// API until branchbox has a raft role (or 15 s after its first answer, for
// a member whose peers are not up yet), and returns the banner's status
// and sites. It calls the API itself rather than through `branchbox ctl`:
// under TCG each run of the 23 MB binary cost ~0.15 s of the box's one CPU
// in package initialisation alone.
func waitServing(ctx context.Context, ready <-chan struct{}, cfgPath string) (boot.Banner, bool) {
	var b boot.Banner
	select {
	case <-ctx.Done():
		return b, false
	case <-ready:
	}
	var c *apiclient.Client
	var answered time.Time
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return b, false
			case <-time.After(50 * time.Millisecond):
			}
		}
		if c == nil {
			var err error
			if c, err = apiClient(cfgPath); err != nil {
				continue
			}
		}
		if c.Do("GET", "/api/v1/status", nil, &b.Status) != nil {
			continue
		}
		if answered.IsZero() {
			answered = time.Now()
		}
		if b.Status.Role == "leader" || b.Status.Role == "follower" || time.Since(answered) > 15*time.Second {
			break
		}
	}
	c.Do("GET", "/api/v1/sites", nil, &b.Sites)
	return b, true
}

// apiClient finds the API the way `branchbox ctl --config cfgPath` does:
// node.api and node.data_dir from the file, or from the embedded default
// (whose data_dir main set in $BRANCHBOX_DATA) when there is none. Only
// those two fields matter, so a config with other problems still names
// the box's API.
func apiClient(cfgPath string) (*apiclient.Client, error) {
	cfg := config.Default()
	if cfgPath != "" {
		c, err := config.Load(cfgPath)
		if c == nil {
			return nil, err
		}
		cfg = c
	}
	return apiclient.New(cfg.Node.API, cfg.Node.DataDir)
}

func addresses() map[string][]string {
	out := map[string][]string{}
	ifs, _ := net.Interfaces()
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
				out[ifc.Name] = append(out[ifc.Name], ipn.String())
			}
		}
	}
	return out
}

func uptimeStr() string { return fmt.Sprintf("%.2fs", uptime()) }

func uptime() float64 {
	data, _ := os.ReadFile("/proc/uptime")
	f, _ := strconv.ParseFloat(strings.Fields(string(data) + " 0")[0], 64)
	return f
}

// console opens a shell on the console each time Enter is pressed. It
// reads one byte at a time so that nothing the operator types after the
// Enter is swallowed before the shell owns the terminal.
func console(log *slog.Logger) {
	b := make([]byte, 1)
	for {
		n, err := os.Stdin.Read(b)
		if err != nil {
			return // no console input (a VM without a serial input)
		}
		if n == 0 || (b[0] != '\n' && b[0] != '\r') {
			continue
		}
		fmt.Fprintln(os.Stdout, "branchbox console shell: branchbox keeps running; exit returns to the logs")
		sh := exec.Command(shell)
		sh.Stdin, sh.Stdout, sh.Stderr = os.Stdin, os.Stdout, os.Stderr
		if err := sh.Run(); err != nil {
			log.Warn("console shell", "err", err)
		}
		fmt.Fprintln(os.Stdout, "back to the logs; press Enter for a shell")
	}
}
