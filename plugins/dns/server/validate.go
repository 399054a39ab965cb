package server

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/coredns/caddy"
	"github.com/coredns/caddy/caddyfile"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/parse"
	"github.com/coredns/coredns/plugin/pkg/transport"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/plugins/dns/leases"
	"github.com/branchbox/branchbox/plugins/dns/provisionserver"
)

// Validate checks the whole Corefile cfg would run, user snippet included,
// by running every plugin's setup without opening a listener. Call it for
// the dns.corefile field once dns.listen and dns.forward are valid: any
// error then is the snippet's, or a clash between it and the generated
// block (such as a second ".:53").
func Validate(cfg Config) error {
	id := "validate" + strconv.FormatUint(lastID.Add(1), 10)
	text, err := Corefile(cfg, id)
	if err != nil {
		return err
	}
	release, err := register(id, Sources{
		ProvisionServer: provisionserver.NewTable(nothing{}, func(cluster.Site) []netip.Addr { return nil }),
		Leases:          leases.NewTable(nothing{}),
	})
	if err != nil {
		return err
	}
	defer release()
	startMu.Lock()
	err = caddy.ValidateAndExecuteDirectives(input(text), nil, true)
	startMu.Unlock()
	if err != nil {
		return err
	}
	return rootClash(cfg)
}

// rootClash finds a snippet server block for the root zone on the
// generated block's port. CoreDNS itself rejects that only when it builds
// its servers, after validation. Blocks that both bind are left to
// CoreDNS: different addresses may share a zone and port.
func rootClash(cfg Config) error {
	host, port, err := splitListen(cfg.Listen)
	if err != nil {
		return err
	}
	blocks, err := caddyfile.Parse("dns.corefile", strings.NewReader(cfg.Corefile), directives)
	if err != nil {
		return err
	}
	for _, b := range blocks {
		_, binds := b.Tokens["bind"]
		for _, key := range b.Keys {
			trans, rest := parse.Transport(key)
			zones, p, err := plugin.SplitHostPort(rest)
			if err != nil || trans != transport.DNS {
				continue
			}
			if p == "" {
				p = dnsserver.Port
			}
			if p == port && slices.Contains(zones, ".") && (host == "" || !binds) {
				return fmt.Errorf("server block %q serves the root zone on port %s, which the generated configuration already serves", key, port)
			}
		}
	}
	return nil
}

// nothing is an empty store, for validation.
type nothing struct{}

func (nothing) Sites() []cluster.Site              { return nil }
func (nothing) Leases() []cluster.Lease            { return nil }
func (nothing) Lease(string) (cluster.Lease, bool) { return cluster.Lease{}, false }
func (nothing) LeaseChanges(uint64) ([]string, uint64, bool) {
	return nil, 0, true
}
func (nothing) Watch() (<-chan struct{}, func())       { return nil, func() {} }
func (nothing) WatchConfig() (<-chan struct{}, func()) { return nil, func() {} }
