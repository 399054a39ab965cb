package server

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/branchbox/branchbox/plugins/dns/internal/zone"
)

// Config is the dns section of the appliance config.
type Config struct {
	// Listen is host:port; an empty host means every address.
	Listen string
	// Forward lists upstream resolvers as IP or IP:port. With none, names
	// outside the site zones are refused.
	Forward []string
	// TTL of ProvisionServer and lease records; 0 means 30 s.
	TTL time.Duration
	// Log logs every query.
	Log bool
	// Corefile is extra Corefile text served beside the generated block,
	// for anything the generated chain does not do.
	Corefile string
}

// Corefile returns the Corefile the server runs for cfg, with the live
// tables registered under id. The user snippet comes first so line
// numbers in CoreDNS's errors are the snippet's own.
func Corefile(cfg Config, id string) (string, error) {
	host, port, err := splitListen(cfg.Listen)
	if err != nil {
		return "", err
	}
	upstreams, err := upstreams(cfg.Forward)
	if err != nil {
		return "", err
	}
	ttl := ttlSeconds(cfg.TTL)

	var b strings.Builder
	if strings.TrimSpace(cfg.Corefile) != "" {
		b.WriteString(cfg.Corefile)
		b.WriteString("\n\n")
	}
	fmt.Fprintf(&b, ".:%s {\n", port)
	if host != "" {
		fmt.Fprintf(&b, "\tbind %s\n", host)
	}
	b.WriteString("\terrors\n")
	if cfg.Log {
		b.WriteString("\tlog\n")
	}
	// provisionserver passes unknown names in a site zone on to leases,
	// which answers NXDOMAIN for those it does not know either.
	fmt.Fprintf(&b, "\tprovisionserver %s {\n\t\tttl %d\n\t\tfallthrough\n\t}\n", id, ttl)
	fmt.Fprintf(&b, "\tleases %s {\n\t\tttl %d\n\t}\n", id, ttl)
	b.WriteString("\tmetrics\n")
	if len(upstreams) > 0 {
		fmt.Fprintf(&b, "\tcache\n\tforward . %s\n", strings.Join(upstreams, " "))
	} else {
		b.WriteString("\ttemplate ANY ANY {\n\t\trcode REFUSED\n\t}\n")
	}
	b.WriteString("}\n")
	return b.String(), nil
}

func splitListen(listen string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(listen)
	if err != nil {
		return "", "", fmt.Errorf("listen %q: want host:port or :port", listen)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return "", "", fmt.Errorf("listen %q: %q is not a port", listen, port)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return "", "", fmt.Errorf("listen %q: %q is not an IP address", listen, host)
		}
	}
	return host, port, nil
}

func upstreams(forward []string) ([]string, error) {
	out := make([]string, 0, len(forward))
	for _, f := range forward {
		if a, err := netip.ParseAddr(f); err == nil {
			out = append(out, a.String())
			continue
		}
		ap, err := netip.ParseAddrPort(f)
		if err != nil {
			return nil, fmt.Errorf("forward %q: want an IP address or IP:port", f)
		}
		out = append(out, ap.String())
	}
	return out, nil
}

func ttlSeconds(d time.Duration) int {
	if d <= 0 {
		return zone.DefaultTTL
	}
	s := int(math.Round(d.Seconds()))
	return min(max(s, 1), zone.MaxTTL)
}
