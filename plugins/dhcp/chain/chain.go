// Package chain runs a DHCPv4 request through an ordered list of small
// plugins, in the shape CoreDHCP users know: each plugin is a Handler that
// may change the reply, stop the chain, or drop the request by returning a
// nil reply.
package chain

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/plugins/dhcp/leases"
)

// Handler handles one request. It returns the (possibly changed) reply and
// whether the chain stops here; a nil reply means "send nothing".
type Handler func(req, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool)

// Env is what a plugin's Setup may read to build its handler for one site.
type Env struct {
	Site     cluster.Site
	Subnet   netip.Prefix
	ServerIP net.IP // the appliance's own address facing this site's clients
	// Peer reports whether addr is another member of this appliance's
	// cluster serving the site: the members answer as one server, so a
	// REQUEST naming a member that failed is the survivor's to answer.
	// Nil on a single box.
	Peer   func(site string, addr net.IP) bool
	Leases *leases.Book
	Log    *slog.Logger
}

// Setup builds a plugin's handler for one site. A nil Handler with a nil
// error means the plugin has nothing to do for that site (for example pxe
// on a site without a boot file).
type Setup func(env Env) (Handler, error)

// Plugin is a named Setup.
type Plugin struct {
	Name  string
	Setup Setup
}

// Registry maps plugin names to plugins. It is an explicit value rather
// than a package-level map filled by init functions, so a test can build a
// chain from exactly the plugins it wants.
type Registry struct {
	plugins map[string]Plugin
}

// NewRegistry indexes plugins by name; a duplicate name is an error.
func NewRegistry(plugins ...Plugin) (*Registry, error) {
	r := &Registry{plugins: make(map[string]Plugin, len(plugins))}
	for _, p := range plugins {
		if p.Name == "" || p.Setup == nil {
			return nil, fmt.Errorf("plugin %q: name and setup are required", p.Name)
		}
		if _, dup := r.plugins[p.Name]; dup {
			return nil, fmt.Errorf("plugin %q registered twice", p.Name)
		}
		r.plugins[p.Name] = p
	}
	return r, nil
}

// Build sets up the named plugins, in order, for one site.
func (r *Registry) Build(env Env, names ...string) (Chain, error) {
	var c Chain
	for _, name := range names {
		p, ok := r.plugins[name]
		if !ok {
			return Chain{}, fmt.Errorf("unknown plugin %q", name)
		}
		h, err := p.Setup(env)
		if err != nil {
			return Chain{}, fmt.Errorf("plugin %s: %w", name, err)
		}
		if h != nil {
			c.handlers = append(c.handlers, h)
			c.names = append(c.names, name)
		}
	}
	return c, nil
}

// Chain is a built, ready-to-run list of handlers.
type Chain struct {
	handlers []Handler
	names    []string
}

// Names lists the active plugins in order.
func (c Chain) Names() []string { return c.names }

// Run passes the request through every handler until one stops the chain
// or drops the request. It returns the final reply, or nil to send nothing.
func (c Chain) Run(req, resp *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	for _, h := range c.handlers {
		var stop bool
		resp, stop = h(req, resp)
		if resp == nil || stop {
			return resp
		}
	}
	return resp
}
