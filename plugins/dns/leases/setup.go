package leases

import (
	"fmt"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"

	"github.com/branchbox/branchbox/plugins/dns/internal/registry"
)

func init() { plugin.Register("leases", setup) }

// tables holds the live tables Corefiles refer to by id.
var tables registry.Registry[*Table]

// Register makes t available to Corefiles as "leases ID". The returned
// func withdraws it; call it once no running server uses it.
func Register(id string, t *Table) (func(), error) {
	remove, err := tables.Add(id, t)
	if err != nil {
		return nil, fmt.Errorf("leases table: %w", err)
	}
	return remove, nil
}

func setup(c *caddy.Controller) error {
	l, err := parse(c)
	if err != nil {
		return plugin.Error("leases", err)
	}
	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		l.Next = next
		return l
	})
	return nil
}

// parse reads the directive (grammar: registry.ParseDirective).
func parse(c *caddy.Controller) (*Leases, error) {
	t, set, err := tables.ParseDirective(c)
	if err != nil {
		return nil, err
	}
	return &Leases{Table: t, TTL: set.TTL, Fallthrough: set.Fallthrough}, nil
}
