package provisionserver

import (
	"fmt"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"

	"github.com/branchbox/branchbox/plugins/dns/internal/registry"
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

// parse reads the directive (grammar: registry.ParseDirective).
func parse(c *caddy.Controller) (*ProvisionServer, error) {
	t, set, err := tables.ParseDirective(c)
	if err != nil {
		return nil, err
	}
	return &ProvisionServer{Table: t, TTL: set.TTL, Fallthrough: set.Fallthrough}, nil
}
