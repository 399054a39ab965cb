package metrics

import (
	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
)

func init() { plugin.Register("metrics", setup) }

func setup(c *caddy.Controller) error {
	c.Next() // the directive itself
	if c.NextArg() || c.NextBlock() {
		return plugin.Error("metrics", c.ArgErr())
	}
	if c.Next() {
		return plugin.Error("metrics", plugin.ErrOnce)
	}
	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		return &Metrics{Next: next}
	})
	return nil
}
