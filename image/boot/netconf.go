package boot

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

// NetworkFile is the optional file on the config disk that addresses the
// box's interfaces. branchbox.yaml's schema has no place for the box's own
// addresses (on a Linux host the OS owns them), and the image must take
// them from the disk, so that the disk alone decides what a box is.
const NetworkFile = "network.conf"

// Iface is one interface's static address.
type Iface struct {
	Name    string
	Addr    netip.Prefix
	Gateway netip.Addr // zero: no default route through this interface
}

// ParseNetwork reads network.conf: one interface a line,
// "NAME ADDR/PREFIX [GATEWAY]", '#' starts a comment.
func ParseNetwork(data []byte) ([]Iface, error) {
	var out []Iface
	var errs []error
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		bad := func(format string, a ...any) {
			errs = append(errs, fmt.Errorf("%s line %d: %s", NetworkFile, n, fmt.Sprintf(format, a...)))
		}
		if len(f) > 3 || len(f) < 2 {
			bad("want NAME ADDR/PREFIX [GATEWAY], got %q", strings.TrimSpace(line))
			continue
		}
		ifc := Iface{Name: f[0]}
		if seen[ifc.Name] {
			bad("interface %s is already addressed above", ifc.Name)
			continue
		}
		p, err := netip.ParsePrefix(f[1])
		if err != nil || !p.Addr().Is4() {
			bad("%s: want an IPv4 ADDR/PREFIX such as 10.0.0.2/24", f[1])
			continue
		}
		ifc.Addr = p
		if len(f) == 3 {
			gw, err := netip.ParseAddr(f[2])
			if err != nil || !gw.Is4() {
				bad("gateway %s: want an IPv4 address", f[2])
				continue
			}
			if !p.Masked().Contains(gw) {
				bad("gateway %s is not on %s", gw, p.Masked())
				continue
			}
			ifc.Gateway = gw
		}
		seen[ifc.Name] = true
		out = append(out, ifc)
	}
	return out, errors.Join(errs...)
}

// WithCmdline applies the command line's branchbox.ip and branchbox.gw to
// eth0, adding eth0 when the file did not name it.
func WithCmdline(ifs []Iface, c Cmdline) []Iface {
	if !c.IP.IsValid() && !c.Gateway.IsValid() {
		return ifs
	}
	out := append([]Iface(nil), ifs...)
	i := -1
	for j := range out {
		if out[j].Name == "eth0" {
			i = j
		}
	}
	if i < 0 {
		out = append(out, Iface{Name: "eth0"})
		i = len(out) - 1
	}
	if c.IP.IsValid() {
		out[i].Addr = c.IP
	}
	if c.Gateway.IsValid() {
		out[i].Gateway = c.Gateway
	}
	return out
}

// Configure gives each interface its address and brings it up, waiting up
// to wait for drivers that are still probing. The default route goes
// through the first interface with a gateway.
func Configure(ifs []Iface, wait time.Duration, log *slog.Logger) error {
	var errs []error
	routed := false
	for _, ifc := range ifs {
		if !ifc.Addr.IsValid() {
			errs = append(errs, fmt.Errorf("%s: a gateway but no address", ifc.Name))
			continue
		}
		link, err := waitLink(ifc.Name, wait)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: ifc.Addr.Addr().AsSlice(), Mask: net.CIDRMask(ifc.Addr.Bits(), 32)}}
		if err := netlink.AddrReplace(link, addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: address %s: %w", ifc.Name, ifc.Addr, err))
			continue
		}
		if err := netlink.LinkSetUp(link); err != nil {
			errs = append(errs, fmt.Errorf("%s: set up: %w", ifc.Name, err))
			continue
		}
		log.Info("interface up", "iface", ifc.Name, "addr", ifc.Addr.String())
		if ifc.Gateway.IsValid() && !routed {
			r := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: ifc.Gateway.AsSlice()}
			if err := netlink.RouteReplace(r); err != nil {
				errs = append(errs, fmt.Errorf("%s: default route via %s: %w", ifc.Name, ifc.Gateway, err))
				continue
			}
			routed = true
			log.Info("default route", "via", ifc.Gateway.String(), "iface", ifc.Name)
		}
	}
	return errors.Join(errs...)
}

func waitLink(name string, wait time.Duration) (netlink.Link, error) {
	deadline := time.Now().Add(wait)
	for {
		link, err := netlink.LinkByName(name)
		if err == nil {
			return link, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: no such interface after %s (is its driver in image/modules.txt?)", name, wait)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
