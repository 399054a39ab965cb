package vmtest

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBootTimes boots the branch box of TestBootServesBranch
// $BRANCHBOX_BOOTS times in a row from one disk and reports boot-to-serving
// (QEMU start → banner) as min/median/max, with each boot's stages in
// guest uptime. The first boot founds the box's cluster, the others
// restart it; the summary is of the restarts.
//
// $BRANCHBOX_BOOT_IMAGES (directories `make image` filled) compares
// images: each gets a disk of its own and the boots take turns, so a busy
// moment on a shared machine slows them all alike. Skipped unless BRANCHBOX_BOOTS is set: it only measures.
// $BRANCHBOX_BOOT_APPEND adds kernel parameters, $BRANCHBOX_BOOT_CONSOLE
// prints each console.
func TestBootTimes(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("BRANCHBOX_BOOTS"))
	if n <= 0 {
		t.Skip("set BRANCHBOX_BOOTS=N to time N boots")
	}
	imgs := []image{requireImage(t)}
	if dirs := strings.Fields(os.Getenv("BRANCHBOX_BOOT_IMAGES")); len(dirs) > 0 {
		imgs = nil
		for _, d := range dirs {
			img, err := loadImage(d)
			if err != nil {
				t.Fatalf("BRANCHBOX_BOOT_IMAGES: %v", err)
			}
			imgs = append(imgs, img)
		}
	}
	bb, _ := binaries(t)
	dir := t.TempDir()
	disk, _ := branchDisk(t, bb, dir)
	ns := newLAN(t)
	type result struct {
		wall, cpu float64
		stages    []stage
	}
	results := make([][]result, len(imgs))
	disks := make([]string, len(imgs))
	for k := range imgs {
		disks[k] = filepath.Join(dir, fmt.Sprintf("disk%d.img", k))
		copyFile(t, disk, disks[k])
	}
	for i := range n {
		for k, img := range imgs {
			vm := bootVM(t, ns, img, disks[k], os.Getenv("BRANCHBOX_BOOT_APPEND"))
			vm.waitBanner(t)
			r := result{wall: time.Since(vm.start).Seconds(), cpu: cpuSeconds(t, vm.proc.Pid())}
			out := strings.ReplaceAll(vm.proc.Output(), "\r\n", "\n")
			vm.proc.Kill()
			r.stages = stages(out)
			results[k] = append(results[k], r)
			var line []string
			for _, s := range r.stages {
				line = append(line, fmt.Sprintf("%s %.2f", s.name, s.up))
			}
			t.Logf("%s boot %d: %.2f s wall, QEMU CPU %.2f s; uptime: %s", filepath.Dir(img.kernel), i+1, r.wall, r.cpu, strings.Join(line, ", "))
			if os.Getenv("BRANCHBOX_BOOT_CONSOLE") != "" {
				t.Logf("console:\n%s", out)
			}
		}
	}
	for k, img := range imgs {
		rs := results[k]
		if len(rs) > 1 {
			rs = rs[1:]
		}
		var walls, cpus []float64
		steps := map[string][]float64{}
		var order []string
		for _, r := range rs {
			walls, cpus = append(walls, r.wall), append(cpus, r.cpu)
			prev := 0.0
			for _, s := range r.stages {
				if !slices.Contains(order, s.name) {
					order = append(order, s.name)
				}
				steps[s.name] = append(steps[s.name], s.up-prev)
				prev = s.up
			}
		}
		var line []string
		for _, name := range order {
			line = append(line, fmt.Sprintf("→ %s %s", name, mmm(steps[name])))
		}
		t.Logf("%s, %d restarts, s min/median/max: wall %s, QEMU CPU %s; stage durations: %s",
			filepath.Dir(img.kernel), len(rs), mmm(walls), mmm(cpus), strings.Join(line, ", "))
	}
}

type stage struct {
	name string
	up   float64
}

var (
	uptimeRe = regexp.MustCompile(`time=(\S+) .*msg="([^"]+)".* uptime=([0-9.]+)s`)
	timeRe   = regexp.MustCompile(`time=(\S+) .*msg="([^"]+)"`)
	upRe     = regexp.MustCompile(`branchbox ready: version \S+, up ([0-9.]+)s`)
)

// stages are boxinit's uptime lines, branchbox's own ready line (its
// wall-clock time turned into uptime through boxinit's first line) and
// the banner.
func stages(console string) []stage {
	var out []stage
	var offset time.Duration
	haveOffset := false
	for _, line := range strings.Split(console, "\n") {
		if m := uptimeRe.FindStringSubmatch(line); m != nil {
			up, _ := strconv.ParseFloat(m[3], 64)
			out = append(out, stage{m[2], up})
			if ts, err := time.Parse(time.RFC3339Nano, m[1]); err == nil && !haveOffset {
				offset, haveOffset = time.Duration(ts.UnixNano())-time.Duration(up*float64(time.Second)), true
			}
			continue
		}
		if m := timeRe.FindStringSubmatch(line); m != nil && haveOffset && m[2] == "branchbox ready" {
			if ts, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
				out = append(out, stage{m[2], (time.Duration(ts.UnixNano()) - offset).Seconds()})
			}
		}
		if m := upRe.FindStringSubmatch(line); m != nil {
			up, _ := strconv.ParseFloat(m[1], 64)
			out = append(out, stage{"banner", up})
		}
	}
	return out
}

// cpuSeconds is the user+system time a process has used so far
// (/proc/PID/stat fields 14 and 15, in clock ticks of 1/100 s).
func cpuSeconds(t *testing.T, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name (field 2) may hold spaces; the rest follows ')'.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func mmm(v []float64) string {
	if len(v) == 0 {
		return "-"
	}
	s := slices.Sorted(slices.Values(v))
	return fmt.Sprintf("%.2f/%.2f/%.2f", s[0], s[len(s)/2], s[len(s)-1])
}
