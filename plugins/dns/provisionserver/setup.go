package provisionserver

import (
	"fmt"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"

	"github.com/branchbox/branchbox/plugins/dns/internal/registry"
	"github.com/branchbox/branchbox/plugins/dns/internal/zone"
)

func init() { plugin.Register("provisionserver", setup) }

// tables holds the live tables Corefiles refer to by id.
var tables registry.Registry[*Table]

// Register makes t available to Corefiles as "provisionserver ID". The
// returned func withdraws it; call it once no running server uses it.
func Register(id string, t *Table) (func(), error) {
	remove, err := tables.Add(id, t)
	if err != nil {
		return nil, fmt.Errorf("provisionserver table: %w", err)
	}
	return remove, nil
}

func setup(c *caddy.Controller) error {
	p, err := parse(c)
	if err != nil {
		return plugin.Error("provisionserver", err)
	}
	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		p.Next = next
		return p
	})
	return nil
}

// parse reads
//
//	provisionserver ID {
//	    ttl SECONDS
//	    fallthrough
//	}
func parse(c *caddy.Controller) (*ProvisionServer, error) {
	p := &ProvisionServer{TTL: zone.DefaultTTL}
	c.Next() // the directive itself
	args := c.RemainingArgs()
	if len(args) != 1 {
		return nil, c.ArgErr()
	}
	t, ok := tables.Get(args[0])
	if !ok {
		return nil, c.Errf("no table registered as %q", args[0])
	}
	p.Table = t
	for c.NextBlock() {
		switch c.Val() {
		case "ttl":
			ttl, err := zone.ParseTTL(c)
			if err != nil {
				return nil, err
			}
			p.TTL = ttl
		case "fallthrough":
			if c.NextArg() {
				return nil, c.ArgErr()
			}
			p.Fallthrough = true
		default:
			return nil, c.Errf("unknown property %q", c.Val())
		}
	}
	if c.Next() {
		return nil, plugin.ErrOnce
	}
	return p, nil
}
