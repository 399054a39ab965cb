package boot

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// Status is the part of GET /api/v1/status the banner shows.
type Status struct {
	Node     string `json:"node"`
	Version  string `json:"version"`
	Role     string `json:"role"`
	Leader   string `json:"leader"`
	Services map[string]struct {
		OK     bool   `json:"ok"`
		Detail string `json:"detail"`
	} `json:"services"`
}

// Site is the part of GET /api/v1/sites the banner shows.
type Site struct {
	Name      string `json:"name"`
	Domain    string `json:"domain"`
	Interface string `json:"interface"`
	Relay     bool   `json:"relay"`
	Subnet    string `json:"subnet"`
}

// Banner is what the console shows once branchbox serves.
type Banner struct {
	Status    Status
	Sites     []Site
	Addresses map[string][]string // interface -> CIDRs
	Uptime    float64             // seconds since the kernel started
	Member    string              // single | voter | witness (Member)
	Run       int                 // 1 at boot, more after restarts
	Config    string              // where the config came from
	Data      string              // data_dir and whether it persists
}

// BannerReady starts the banner's first line; tests and scripts wait for it.
const BannerReady = "branchbox ready"

// Write prints the banner.
func (b Banner) Write(w io.Writer) {
	var sb strings.Builder
	rule := strings.Repeat("=", 72)
	fmt.Fprintln(&sb, rule)
	fmt.Fprintf(&sb, "%s: version %s, up %.2fs", BannerReady, b.Status.Version, b.Uptime)
	if b.Run > 1 {
		fmt.Fprintf(&sb, " (restart %d)", b.Run-1)
	}
	fmt.Fprintln(&sb)
	row := func(k, format string, a ...any) { fmt.Fprintf(&sb, "  %-10s %s\n", k, fmt.Sprintf(format, a...)) }
	leader := b.Status.Leader
	if leader == "" {
		leader = "none yet"
	}
	row("node", "%s", b.Status.Node)
	switch b.Member {
	case "witness":
		row("member", "witness: raft only, no DHCP, DNS or provisioner")
	case "voter":
		row("member", "voter in a cluster")
	default:
		row("member", "single box")
	}
	row("raft", "role %s, leader %s", b.Status.Role, leader)
	names := slices.Sorted(maps.Keys(b.Addresses))
	if len(names) == 0 {
		row("addresses", "none (give them in network.conf on the config disk, or branchbox.ip=)")
	}
	for i, n := range names {
		k := ""
		if i == 0 {
			k = "addresses"
		}
		row(k, "%-6s %s", n, strings.Join(b.Addresses[n], " "))
	}
	if len(b.Sites) == 0 {
		row("sites", "none: DHCP is off")
	}
	for i, s := range b.Sites {
		k := ""
		if i == 0 {
			k = "sites"
		}
		where := s.Interface
		if s.Relay {
			where = "relay"
		}
		row(k, "%s  %s  %s on %s", s.Name, s.Domain, s.Subnet, where)
	}
	if b.Member == "witness" {
		// Its health says "ok, not run on a witness" for each service.
		row("services", "none: a witness runs raft only")
	} else {
		var svc []string
		for _, n := range slices.Sorted(maps.Keys(b.Status.Services)) {
			st := "ok"
			if !b.Status.Services[n].OK {
				st = "DOWN"
				if d := b.Status.Services[n].Detail; d != "" {
					st += " (" + d + ")"
				}
			}
			svc = append(svc, n+" "+st)
		}
		row("services", "%s", strings.Join(svc, ", "))
	}
	row("config", "%s", b.Config)
	row("data", "%s", b.Data)
	row("console", "press Enter for a shell (ip, ping, dmesg, cat, ls, ps, kill, shutdown, branchbox ctl)")
	fmt.Fprintln(&sb, rule)
	io.WriteString(w, sb.String())
}
