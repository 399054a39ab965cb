package zone

import (
	"strconv"

	"github.com/coredns/caddy"
)

// DefaultTTL is the TTL of site-zone answers when the Corefile sets none:
// short, so changed provisioners and leases reach clients quickly.
const DefaultTTL = 30

// MaxTTL bounds the ttl property at a day, as the config's dns.ttl is.
const MaxTTL = 86400

// ParseTTL reads the argument of a "ttl SECONDS" property.
func ParseTTL(c *caddy.Controller) (uint32, error) {
	args := c.RemainingArgs()
	if len(args) != 1 {
		return 0, c.ArgErr()
	}
	n, err := strconv.ParseUint(args[0], 10, 32)
	if err != nil || n == 0 || n > MaxTTL {
		return 0, c.Errf("ttl %q: want whole seconds from 1 to %d", args[0], MaxTTL)
	}
	return uint32(n), nil
}
