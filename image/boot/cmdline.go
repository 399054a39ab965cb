// Package boot is what the appliance image does between the kernel and
// branchbox: read the kernel command line and the config disk, address the
// interfaces, find persistent storage, run branchbox (again, whenever it
// exits) and print the console banner. image/cmd/boxinit, u-root's uinit,
// puts these together.
package boot

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

// Cmdline holds the kernel command-line overrides the image honours. They
// win over the config disk, so one disk can boot several boxes.
type Cmdline struct {
	IP      netip.Prefix // branchbox.ip=ADDR/PREFIX: eth0's address
	Gateway netip.Addr   // branchbox.gw=ADDR: default route
	Node    string       // branchbox.node=ID: node.id
}

// The same rule as node.id in the config schema.
var nodeIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// ParseCmdline reads the branchbox.* parameters of a kernel command line
// (the text of /proc/cmdline). A malformed parameter is reported and
// ignored, so one typo does not keep the box from booting.
func ParseCmdline(s string) (Cmdline, []error) {
	var c Cmdline
	var errs []error
	for _, f := range strings.Fields(s) {
		key, val, ok := strings.Cut(f, "=")
		if !ok || !strings.HasPrefix(key, "branchbox.") {
			continue
		}
		val = strings.Trim(val, `"`)
		switch key {
		case "branchbox.ip":
			p, err := netip.ParsePrefix(val)
			if err != nil || !p.Addr().Is4() {
				errs = append(errs, fmt.Errorf("kernel command line: branchbox.ip=%s: want an IPv4 ADDR/PREFIX such as 10.0.0.2/24", val))
				continue
			}
			c.IP = p
		case "branchbox.gw":
			a, err := netip.ParseAddr(val)
			if err != nil || !a.Is4() {
				errs = append(errs, fmt.Errorf("kernel command line: branchbox.gw=%s: want an IPv4 address", val))
				continue
			}
			c.Gateway = a
		case "branchbox.node":
			if !nodeIDRe.MatchString(val) {
				errs = append(errs, fmt.Errorf("kernel command line: branchbox.node=%s: want letters, digits, '.', '_' or '-' (at most 63)", val))
				continue
			}
			c.Node = val
		default:
			errs = append(errs, fmt.Errorf("kernel command line: %s: unknown (known: branchbox.ip, branchbox.gw, branchbox.node)", key))
		}
	}
	return c, errs
}
