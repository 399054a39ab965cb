// Package vmtest boots the appliance image (make image) in QEMU and serves
// a branch LAN from it: real DHCP, DNS and AMT activation against the VM,
// over a tap in a network namespace the test creates.
package vmtest

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/branchbox/branchbox/image/boot"
	"github.com/branchbox/branchbox/image/configdisk"
	"github.com/branchbox/branchbox/tests/e2e"
)

const (
	domain = "branch1.vm.example"
	boxIP  = "10.77.0.1"
	// TCG on a shared 2-core machine: a boot takes seconds, not minutes;
	// the limit only stops a hung VM.
	bootTimeout = 3 * time.Minute
)

// TestBootServesBranch boots the image with a config disk, waits for the
// banner, then acts as the branch LAN: udhcpc gets a lease with option 15,
// dig resolves ProvisionServer.<domain> to the VM, and amtsim devices are
// activated by the VM. A second boot from the same disk finds the state the
// first one wrote.
func TestBootServesBranch(t *testing.T) {
	img := requireImage(t)
	bb, sim := binaries(t)

	dir := t.TempDir()
	disk, rootHash := branchDisk(t, bb, dir)

	ns := newLAN(t)
	vm := bootVM(t, ns, img, disk, "")
	banner := vm.waitBanner(t)
	for _, want := range []string{"node       vmbox", "role leader", "eth0   " + boxIP + "/24", "branch1  " + domain + "  10.77.0.0/24 on eth0", "persistent, on vda", "dhcp ok, dns ok, provisioner ok"} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}

	t.Run("dhcp", func(t *testing.T) {
		lease := dhcp(t, ns, dir)
		if lease["domain"] != domain || lease["dns"] != boxIP || lease["router"] != boxIP || !strings.HasPrefix(lease["ip"], "10.77.0.") {
			t.Errorf("lease %v: want option 15 %s, DNS and router %s, an address in 10.77.0.0/24", lease, domain, boxIP)
		}
	})
	t.Run("dns", func(t *testing.T) {
		out := ns.MustRun("dig", "+short", "+time=3", "+tries=3", "@"+boxIP, "provisionserver."+strings.ToUpper(domain))
		if strings.TrimSpace(out) != boxIP {
			t.Errorf("ProvisionServer.%s: %q, want %s", domain, out, boxIP)
		}
	})
	t.Run("amt activation", func(t *testing.T) {
		const n = 3
		status := "127.0.0.1:16999"
		p := ns.Start(sim, "--count", fmt.Sprint(n), "--interface", "lan0", "--custom-root-hash", rootHash,
			"--status-listen", status, "--hello-schedule", "100x2s", "--dhcp-timeout", "5s")
		p.WaitOutput(t, "amtsim: status on", time.Minute)
		deadline := time.Now().Add(4 * time.Minute)
		for {
			ds := simStatus(t, ns, status)
			acm := 0
			for _, d := range ds {
				if d.ControlMode == "acm" {
					acm++
				}
			}
			if acm == n {
				t.Logf("%d amtsim devices activated in ACM by the VM", n)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d devices activated: %+v\nVM console:\n%s", acm, n, ds, vm.proc.Output())
			}
			time.Sleep(time.Second)
		}
		p.Kill()
	})
	vm.proc.Kill()
	if strings.Contains(vm.proc.Output(), "exited; restarting") {
		t.Errorf("branchbox restarted during the test:\n%s", vm.proc.Output())
	}

	t.Run("state survives a reboot", func(t *testing.T) {
		vm := bootVM(t, ns, img, disk, "")
		vm.waitBanner(t)
		out := vm.proc.Output()
		if strings.Contains(out, "bootstrapped a new cluster") {
			t.Errorf("second boot bootstrapped a new cluster instead of reading the disk:\n%s", out)
		}
		vm.proc.Kill()
	})
}

// branchDisk makes the config disk of a branch box in dir: one site on
// eth0 with a demo provisioning CA, DNS and the provisioner. It returns the
// disk and the CA root's hash (what amtsim devices trust).
func branchDisk(t *testing.T, bb, dir string) (disk, rootHash string) {
	t.Helper()
	run(t, bb, "demo-ca", "--domain", domain, "--out", filepath.Join(dir, "ca"))
	rootHash = strings.TrimSpace(readFile(t, filepath.Join(dir, "ca", "root.sha256")))
	writeFile(t, filepath.Join(dir, "admin.pass"), "Vm-Test-Pass!7\n")
	writeFile(t, filepath.Join(dir, "branchbox.yaml"), `node:
  id: vmbox
  data_dir: /var/lib/branchbox   # the image puts it on the disk
  api: 127.0.0.1:8443
dns:
  listen: ":53"
provisioner:
  listen: ":9971"
sites:
  - name: branch1
    domain: `+domain+`
    interface: eth0
    subnet: 10.77.0.0/24
    range: [10.77.0.10, 10.77.0.250]
    router: `+boxIP+`
    lease_time: 1h
    provisioning_cert: {chain: ca/chain.pem, key: ca/key.pem}
    profile: standard
    naming_template: amt-{uuid8}
    allow_template: true
profiles:
  - name: standard
    admin_password_file: admin.pass
`)
	writeFile(t, filepath.Join(dir, "network.conf"), "eth0 "+boxIP+"/24\n")
	disk = filepath.Join(dir, "config.img")
	if err := configdisk.Build(configdisk.Options{Config: filepath.Join(dir, "branchbox.yaml"), Network: filepath.Join(dir, "network.conf"), Out: disk, Size: 64 << 20}); err != nil {
		t.Fatal(err)
	}

	return disk, rootHash
}

// TestBootRoleFromDisk: one image, the disk decides what the box is. A
// clustered voter (node.cluster) with its node id from the kernel command
// line, a witness that joins a founder on the LAN, and no disk at all: the
// embedded lab default, with the warning that nothing persists.
func TestBootRoleFromDisk(t *testing.T) {
	img := requireImage(t)
	bb, _ := binaries(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "branchbox.yaml"), `node:
  id: from-disk
  api: 127.0.0.1:8443
  cluster:
    raft: `+boxIP+`:7000
    role: voter
dns:
  listen: ":53"
`)
	writeFile(t, filepath.Join(dir, "network.conf"), "eth0 "+boxIP+"/24\n")
	disk := filepath.Join(dir, "voter.img")
	if err := configdisk.Build(configdisk.Options{Config: filepath.Join(dir, "branchbox.yaml"), Network: filepath.Join(dir, "network.conf"), Out: disk, Size: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	ns := newLAN(t)

	t.Run("voter", func(t *testing.T) {
		vm := bootVM(t, ns, img, disk, "branchbox.node=pair-a")
		banner := vm.waitBanner(t)
		for _, want := range []string{"node       pair-a", "role leader", "sites      none"} {
			if !strings.Contains(banner, want) {
				t.Errorf("banner lacks %q:\n%s", want, banner)
			}
		}
		vm.proc.Kill()
	})
	t.Run("witness", func(t *testing.T) {
		founder, founderCfg := startHostMember(t, ns, bb, dir, "founder", founderIP, "", 18443)
		token := ns.MustRun(bb, "ctl", "--config", founderCfg, "cluster", "token")
		wdir := filepath.Join(dir, "witness")
		os.MkdirAll(wdir, 0o700)
		writeFile(t, filepath.Join(wdir, "join.token"), token)
		writeFile(t, filepath.Join(dir, "join.token"), token)
		writeFile(t, filepath.Join(wdir, "branchbox.yaml"), `node:
  id: witness-vm
  api: 127.0.0.1:8443
  cluster:
    raft: `+boxIP+`:7000
    role: witness
    join: [`+founderIP+`:7000]
    join_token_file: join.token
`)
		writeFile(t, filepath.Join(wdir, "network.conf"), "eth0 "+boxIP+"/24\n")
		disk := filepath.Join(wdir, "witness.img")
		if err := configdisk.Build(configdisk.Options{Config: filepath.Join(wdir, "branchbox.yaml"), Network: filepath.Join(wdir, "network.conf"), Out: disk, Size: 64 << 20}); err != nil {
			t.Fatal(err)
		}
		vm := bootVM(t, ns, img, disk, "")
		banner := vm.waitBanner(t)
		for _, want := range []string{"node       witness-vm", "member     witness", "role follower, leader founder", "services   none: a witness runs raft only"} {
			if !strings.Contains(banner, want) {
				t.Errorf("banner lacks %q:\n%s", want, banner)
			}
		}
		// A second full member: with it the witness gets its vote (the
		// cluster never has a voting set of exactly two), and the
		// founder's view shows the VM's kind.
		voter, _ := startHostMember(t, ns, bb, dir, "voter", voterIP, filepath.Join(dir, "join.token"), 18453)
		deadline := time.Now().Add(30 * time.Second)
		for {
			var ms []struct{ ID, Kind string }
			out, err := ns.Run(bb, "ctl", "--config", founderCfg, "--output", "json", "cluster", "status")
			if err == nil && json.Unmarshal([]byte(out), &ms) == nil && slices.Contains(ms, struct{ ID, Kind string }{"witness-vm", "witness"}) {
				t.Logf("founder's cluster status lists witness-vm as a witness:\n%s", ns.MustRun(bb, "ctl", "--config", founderCfg, "cluster", "status"))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("founder's cluster status never listed witness-vm as a witness: %v\n%s\nfounder log:\n%s", err, out, founder.Output())
			}
			time.Sleep(500 * time.Millisecond)
		}
		vm.proc.Kill()
		voter.Kill()
		founder.Kill()
	})
	// Also the contract's initramfs.cpio.gz: the same files as the LZ4
	// archive the other boots use.
	t.Run("no disk", func(t *testing.T) {
		vm := bootVM(t, ns, img.gzip(), "", "branchbox.ip="+boxIP+"/24")
		banner := vm.waitBanner(t)
		for _, want := range []string{"IN RAM: lost at power-off", "embedded lab default", "eth0   " + boxIP + "/24"} {
			if !strings.Contains(banner, want) {
				t.Errorf("banner lacks %q:\n%s", want, banner)
			}
		}
		if !strings.Contains(vm.proc.Output(), "NO PERSISTENT DISK") {
			t.Errorf("no warning about running without persistence:\n%s", vm.proc.Output())
		}

		// One process dying must not take the box down: kill branchbox
		// from the console shell, and the box starts it again and serves.
		io.WriteString(vm.console, "\n")
		vm.proc.WaitOutput(t, "branchbox console shell", 30*time.Second)
		io.WriteString(vm.console, "pidof branchbox\n")
		pid := waitMatch(t, vm.proc, pidRe, 30*time.Second)
		killed := time.Now()
		io.WriteString(vm.console, "kill -9 "+pid+"\n")
		vm.proc.WaitOutput(t, "branchbox exited; restarting it", 30*time.Second)
		vm.proc.WaitOutput(t, "(restart 1)", bootTimeout)
		t.Logf("kill -9 of branchbox (pid %s) → serving again: %.2f s (1 s of it the restart back-off)", pid, time.Since(killed).Seconds())
		out := strings.ReplaceAll(vm.proc.Output(), "\r\n", "\n")
		again := out[strings.LastIndex(out, "(restart 1)"):]
		for _, want := range []string{"role leader", "dns ok"} {
			if !strings.Contains(again, want) {
				t.Errorf("banner after the restart lacks %q:\n%s", want, again)
			}
		}
		if strings.Contains(out, "Kernel panic") {
			t.Errorf("kernel panicked:\n%s", out)
		}
		vm.proc.Kill()
	})
}

// image is what a VM boots. Under TCG that is the uncompressed kernel
// (PVH) and the LZ4 archive: the contract's vmlinuz and initramfs.cpio.gz
// hold the same kernel and files but take longer to unpack.
type image struct{ kernel, initramfs, cmdline string }

// founderIP and voterIP are the host side of the LAN: addresses of the
// bridge itself.
const founderIP, voterIP = "10.77.0.2", "10.77.0.3"

// startHostMember runs a clustered branchbox on the host side of the LAN
// (the bridge in ns): the founder of a cluster a VM joins when token is
// empty, else a voter that joins the founder with that token file.
func startHostMember(t *testing.T, ns *e2e.NS, bb, dir, id, ip, token string, port int) (*e2e.Proc, string) {
	t.Helper()
	ns.MustRun("ip", "addr", "add", ip+"/24", "dev", "br0")
	join := ""
	if token != "" {
		join = "\n    join: [" + founderIP + ":7000]\n    join_token_file: " + token
	}
	cfg := filepath.Join(dir, id+".yaml")
	writeFile(t, cfg, fmt.Sprintf(`node:
  id: %s
  data_dir: %s
  api: 127.0.0.1:%d
  cluster:
    raft: %s:7000%s
dns:
  listen: "127.0.0.1:%d"
provisioner:
  listen: "127.0.0.1:%d"
  agent_listen: "127.0.0.1:%d"
`, id, filepath.Join(dir, id), port, ip, join, port+1, port+2, port+3))
	p := ns.Start(bb, "serve", "--config", cfg)
	p.WaitOutput(t, `msg="branchbox ready"`, time.Minute)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", id, p.Output())
		}
	})
	return p, cfg
}

// requireImage finds make image's output: $BRANCHBOX_IMAGE_DIR (make test
// sets it and builds the image first, so there it must exist), else
// image/out.
func requireImage(t *testing.T) image {
	t.Helper()
	e2e.RequireRoot(t)
	e2e.RequireTools(t, map[string]string{"qemu-system-x86_64": "qemu-system-x86", "udhcpc": "udhcpc", "dig": "dnsutils", "mkfs.ext4": "e2fsprogs"})
	dir := os.Getenv("BRANCHBOX_IMAGE_DIR")
	if dir == "" {
		dir = filepath.Join("..", "out")
		if _, err := os.Stat(filepath.Join(dir, "vmlinux")); err != nil {
			t.Skipf("%v: run make image first (make test does)", err)
		}
	}
	img, err := loadImage(dir)
	if err != nil {
		t.Fatalf("BRANCHBOX_IMAGE_DIR=%s: %v", dir, err)
	}
	return img
}

// loadImage is the image `make image` left in dir: the kernel and archives
// the tests boot, and the kernel command line it ships with.
func loadImage(dir string) (image, error) {
	img := image{kernel: filepath.Join(dir, "vmlinux"), initramfs: filepath.Join(dir, "initramfs.cpio.lz4")}
	for _, f := range []string{img.kernel, img.initramfs, img.gzip().initramfs} {
		if _, err := os.Stat(f); err != nil {
			return image{}, err
		}
	}
	cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil {
		return image{}, err
	}
	img.cmdline = strings.TrimSpace(string(cmdline))
	return img, nil
}

// gzip is the same image with the contract's initramfs.cpio.gz.
func (img image) gzip() image {
	img.initramfs = strings.TrimSuffix(img.initramfs, ".lz4") + ".gz"
	return img
}

// binaries are $BRANCHBOX_BIN and $AMTSIM_BIN (make test), or fresh builds.
func binaries(t *testing.T) (branchbox, amtsim string) {
	t.Helper()
	get := func(env, pkg string) string {
		if p := os.Getenv(env); p != "" {
			return p
		}
		out := filepath.Join(t.TempDir(), filepath.Base(pkg))
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = filepath.Join("..", "..")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
		return out
	}
	return get("BRANCHBOX_BIN", "./appliance/cmd/branchbox"), get("AMTSIM_BIN", "./tests/amtsim/cmd/amtsim")
}

// newLAN is the branch LAN: a namespace with a bridge joining the VM's tap
// and a veth whose free end, lan0, carries the test's clients.
func newLAN(t *testing.T) *e2e.NS {
	ns := e2e.NewNS(t, "vm")
	for _, c := range [][]string{
		{"ip", "link", "add", "br0", "type", "bridge"},
		{"ip", "tuntap", "add", "dev", "tap0", "mode", "tap"},
		{"ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lanbr"},
		{"ip", "link", "set", "tap0", "master", "br0"},
		{"ip", "link", "set", "lanbr", "master", "br0"},
		{"ip", "link", "set", "br0", "up"},
		{"ip", "link", "set", "tap0", "up"},
		{"ip", "link", "set", "lanbr", "up"},
		{"ip", "link", "set", "lan0", "up"},
	} {
		ns.MustRun(c[0], c[1:]...)
	}
	return ns
}

type vm struct {
	proc    *e2e.Proc
	console io.Writer // the serial console's input
	start   time.Time
}

// bootVM starts QEMU (TCG: this machine's /dev/kvm only runs PVM guests)
// on the uncompressed kernel through PVH, the tap as eth0, disk (if any)
// as vda, and a virtio RNG: QEMU's default CPU has no RDRAND, and without
// an RNG device the kernel takes ~1 s of a boot to gather the entropy
// branchbox's first getrandom waits for (branch hardware has RDRAND).
func bootVM(t *testing.T, ns *e2e.NS, img image, disk, cmdline string) *vm {
	t.Helper()
	args := []string{"-accel", "tcg", "-m", "512", "-smp", "1", "-nodefaults", "-display", "none",
		"-serial", "stdio", "-no-reboot",
		"-kernel", img.kernel, "-initrd", img.initramfs,
		"-append", strings.TrimSpace(img.cmdline + " " + cmdline),
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:77:00:01,romfile=",
		"-device", "virtio-rng-pci"}
	if disk != "" {
		args = append(args, "-drive", "file="+disk+",if=virtio,format=raw")
	}
	// For measuring, e.g. -icount shift=0,sleep=off: guest time then counts
	// instructions, whatever else the host runs.
	args = append(args, strings.Fields(os.Getenv("BRANCHBOX_QEMU_APPEND"))...)
	v := &vm{start: time.Now()}
	v.proc, v.console = ns.StartWithInput("qemu-system-x86_64", args...)
	t.Cleanup(func() {
		v.proc.Kill()
		if t.Failed() {
			t.Logf("VM console:\n%s", v.proc.Output())
		}
	})
	return v
}

var bannerRe = regexp.MustCompile(`(?s)` + boot.BannerReady + `: version \S+, up ([0-9.]+)s.*?\n={72}\n`)

// waitBanner waits for the console banner and reports boot-to-serving time:
// host wall time from QEMU's start, and the guest's uptime.
func (v *vm) waitBanner(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(bootTimeout)
	for {
		// The serial console ends lines with \r\n.
		if m := bannerRe.FindStringSubmatch(strings.ReplaceAll(v.proc.Output(), "\r\n", "\n")); m != nil {
			t.Logf("boot to serving: %.2f s from QEMU start (guest uptime %s s, TCG)", time.Since(v.start).Seconds(), m[1])
			return m[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no banner within %s; console:\n%s", bootTimeout, v.proc.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pidRe is the answer to pidof on the console: digits alone on a line,
// after the shell's prompt (rush prints "% " before reading input, so the
// answer lands behind the prompt).
var pidRe = regexp.MustCompile(`(?m)^(?:% )*([0-9]+)\s*$`)

// waitMatch waits for re in p's output after the console shell opened,
// and returns its first group.
func waitMatch(t *testing.T, p *e2e.Proc, re *regexp.Regexp, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out := strings.ReplaceAll(p.Output(), "\r\n", "\n")
		if i := strings.LastIndex(out, "branchbox console shell"); i >= 0 {
			if m := re.FindStringSubmatch(out[i:]); m != nil {
				return m[1]
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s on the console within %s:\n%s", re, timeout, p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dhcp runs udhcpc on a macvlan of lan0 and returns what the server gave.
func dhcp(t *testing.T, ns *e2e.NS, dir string) map[string]string {
	t.Helper()
	ns.MustRun("ip", "link", "add", "link", "lan0", "name", "dhcp0", "type", "macvlan", "mode", "bridge")
	ns.MustRun("ip", "link", "set", "dhcp0", "up")
	log := filepath.Join(dir, "udhcpc.log")
	script := filepath.Join(dir, "udhcpc.sh")
	writeFile(t, script, `#!/bin/sh
[ "$1" = bound ] || exit 0
ip addr add "$ip/$mask" dev "$interface"
echo "ip=$ip domain=$domain dns=$dns router=$router lease=$lease" >>`+log+"\n")
	os.Chmod(script, 0o755)
	ns.MustRun("udhcpc", "-i", "dhcp0", "-f", "-q", "-n", "-t", "10", "-T", "2", "-s", script)
	fields := map[string]string{}
	for _, f := range strings.Fields(readFile(t, log)) {
		k, v, _ := strings.Cut(f, "=")
		fields[k] = v
	}
	return fields
}

type simDevice struct {
	UUID        string `json:"uuid"`
	IP          string `json:"ip"`
	State       string `json:"state"`
	ControlMode string `json:"control_mode"`
	LastError   string `json:"last_error"`
}

// simStatus reads amtsim's status endpoint, dialled inside the namespace.
func simStatus(t *testing.T, ns *e2e.NS, addr string) []simDevice {
	t.Helper()
	var ds []simDevice
	err := ns.GetJSON(addr, &ds)
	if err != nil {
		t.Fatalf("amtsim status: %v", err)
	}
	return ds
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}
