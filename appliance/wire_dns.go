package appliance

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/branchbox/branchbox/appliance/config"
	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/plugins/dns/leases"
	dnsmetrics "github.com/branchbox/branchbox/plugins/dns/metrics"
	"github.com/branchbox/branchbox/plugins/dns/provisionserver"
	dnsserver "github.com/branchbox/branchbox/plugins/dns/server"
)

// Intervals of the DNS service's background work.
const (
	// provisionerRefresh re-reads what the store cannot signal a change
	// of: interface addresses, and which cluster members are live (a dead
	// member leaves the answers within this plus the liveness window).
	provisionerRefresh = 2 * time.Second
	dnsProbeEvery      = 10 * time.Second
)

// startDNS runs CoreDNS in-process with the branchbox plugins reading the
// store: ProvisionServer.<domain> and lease host records follow the store
// live, with no reload. Its condition shows on the status page as "dns"
// and its metrics on /metrics.
func (a *App) startDNS(ctx context.Context) error {
	if a.Cfg.DNS.Disabled {
		a.Health.Set("dns", true, "disabled in config")
		return nil
	}
	ps := provisionserver.NewTable(a.Store, a.provisionServerAddrs)
	ls := leases.NewTable(a.Store)
	srv, err := dnsserver.Start(dnsConfig(a.Cfg.DNS), dnsserver.Sources{ProvisionServer: ps, Leases: ls})
	if err != nil {
		a.Health.Set("dns", false, err.Error())
		return err
	}
	a.onClose(func() {
		if err := srv.Stop(); err != nil {
			a.Log.Error("stopping dns", "err", err)
		}
	})
	// CoreDNS keeps its metrics in the default registry.
	if err := a.Metrics.Register(dnsmetrics.Collector(prometheus.DefaultGatherer)); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	a.goRun(func() { ps.Run(ctx, provisionerRefresh) })
	a.goRun(func() { ls.Run(ctx) })
	a.goRun(func() { a.watchDNS(ctx, srv) })
	a.Log.Info("dns serving", "listen", a.Cfg.DNS.Listen, "forward", a.Cfg.DNS.Forward)
	return nil
}

// dnsConfig maps the config file's dns section onto the server's.
func dnsConfig(c config.DNS) dnsserver.Config {
	return dnsserver.Config{
		Listen:   c.Listen,
		Forward:  c.Forward,
		TTL:      c.TTL.Std(),
		Log:      c.Log,
		Corefile: c.Corefile,
	}
}

// provisionServerAddrs is where a site's devices reach a provisioner: in
// a cluster every live member serving the site, else this box.
func (a *App) provisionServerAddrs(s cluster.Site) []netip.Addr {
	if a.clustered() {
		return a.clusterProvisionServerAddrs(s)
	}
	return a.ownProvisionServerAddrs(s)
}

// ownProvisionServerAddrs is where a site's devices reach this box's
// provisioner: its address on the site's interface, or, for a relayed
// site, every provisioner.advertise address (IPv6 ones give AAAA records).
func (a *App) ownProvisionServerAddrs(s cluster.Site) []netip.Addr {
	if s.Interface != "" && !s.Relay {
		addr, err := a.siteServerAddr(s)
		if err != nil {
			return nil
		}
		return []netip.Addr{addr}
	}
	var out []netip.Addr
	for _, adv := range a.Cfg.Provisioner.Advertise {
		if addr, err := netip.ParseAddr(adv); err == nil {
			out = append(out, addr)
		}
	}
	return out
}

// watchDNS keeps the "dns" health current by querying the server for a
// name it answers itself.
func (a *App) watchDNS(ctx context.Context, srv *dnsserver.Server) {
	tick := time.NewTicker(dnsProbeEvery)
	defer tick.Stop()
	for {
		a.probeDNS(ctx, srv)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (a *App) probeDNS(ctx context.Context, srv *dnsserver.Server) {
	addr := srv.Addr()
	if addr == nil {
		a.Health.Set("dns", false, "no UDP listener")
		return
	}
	sites := a.Store.Sites()
	if len(sites) == 0 {
		a.Health.Set("dns", true, "serving on "+addr.String()+", no sites yet")
		return
	}
	if err := srv.Probe(ctx, "ProvisionServer."+sites[0].Domain); err != nil {
		if ctx.Err() == nil {
			a.Health.Set("dns", false, err.Error())
		}
		return
	}
	a.Health.Set("dns", true, "serving on "+addr.String())
}
