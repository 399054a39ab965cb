package vmtest

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBootTimes boots the branch box of TestBootServesBranch
// $BRANCHBOX_BOOTS times in a row from the same disk and reports
// boot-to-serving (QEMU start → banner) as min/median/max, with each boot's
// stages in guest uptime. Skipped unless BRANCHBOX_BOOTS is set: it only
// measures. $BRANCHBOX_BOOT_APPEND adds kernel parameters.
func TestBootTimes(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("BRANCHBOX_BOOTS"))
	if n <= 0 {
		t.Skip("set BRANCHBOX_BOOTS=N to time N boots")
	}
	img := requireImage(t)
	bb, _ := binaries(t)
	dir := t.TempDir()
	disk, _ := branchDisk(t, bb, dir)
	ns := newLAN(t)
	var walls, ups, cpus []float64
	for i := range n {
		vm := bootVM(t, ns, img, disk, os.Getenv("BRANCHBOX_BOOT_APPEND"))
		vm.waitBanner(t)
		wall := time.Since(vm.start).Seconds()
		cpu := cpuSeconds(t, vm.proc.Pid())
		out := strings.ReplaceAll(vm.proc.Output(), "\r\n", "\n")
		vm.proc.Kill()
		st := stages(out)
		walls, ups, cpus = append(walls, wall), append(ups, st[len(st)-1].up), append(cpus, cpu)
		var line []string
		for _, s := range st {
			line = append(line, fmt.Sprintf("%s %.2f", s.name, s.up))
		}
		t.Logf("boot %d: %.2f s wall, QEMU CPU %.2f s; uptime: %s", i+1, wall, cpu, strings.Join(line, ", "))
		if os.Getenv("BRANCHBOX_BOOT_CONSOLE") != "" {
			t.Logf("console:\n%s", out)
		}
	}
	t.Logf("%d boots, s min/median/max: wall %s, QEMU CPU %s, guest uptime at banner %s", n, mmm(walls), mmm(cpus), mmm(ups))
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
		if m := timeRe.FindStringSubmatch(line); m != nil && haveOffset && (m[2] == "branchbox ready" || m[2] == "bootstrapped a new cluster") {
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

func mmm(v []float64) string {
	s := slices.Sorted(slices.Values(v))
	return fmt.Sprintf("%.2f/%.2f/%.2f", s[0], s[len(s)/2], s[len(s)-1])
}
