package registry

import (
	"github.com/coredns/caddy"
	"github.com/coredns/coredns/plugin"

	"github.com/branchbox/branchbox/plugins/dns/internal/zone"
)

// Settings are the properties every table-backed plugin accepts.
type Settings struct {
	TTL         uint32
	Fallthrough bool
}

// ParseDirective reads the Corefile grammar shared by the table-backed
// plugins and returns the value registered under its id:
//
//	NAME ID {
//	    ttl SECONDS
//	    fallthrough
//	}
func (r *Registry[T]) ParseDirective(c *caddy.Controller) (T, Settings, error) {
	var zero T
	s := Settings{TTL: zone.DefaultTTL}
	c.Next() // the directive itself
	args := c.RemainingArgs()
	if len(args) != 1 {
		return zero, s, c.ArgErr()
	}
	v, ok := r.Get(args[0])
	if !ok {
		return zero, s, c.Errf("no table registered as %q", args[0])
	}
	for c.NextBlock() {
		switch c.Val() {
		case "ttl":
			ttl, err := zone.ParseTTL(c)
			if err != nil {
				return zero, s, err
			}
			s.TTL = ttl
		case "fallthrough":
			if c.NextArg() {
				return zero, s, c.ArgErr()
			}
			s.Fallthrough = true
		default:
			return zero, s, c.Errf("unknown property %q", c.Val())
		}
	}
	if c.Next() {
		return zero, s, plugin.ErrOnce
	}
	return v, s, nil
}
