package appliance

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/branchbox/branchbox/appliance/config"
	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/provisioner"
	"github.com/branchbox/branchbox/provisioner/agentapi"
)

// startProvisioner opens the AMT hello listener, runs activations in the
// background and mounts the provisioner's API endpoints (OTP registration,
// inventory import, setup.bin downloads) on the admin API.
func (a *App) startProvisioner(ctx context.Context) error {
	listen := a.Cfg.Provisioner.Listen
	if listen == "" {
		listen = ":9971"
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		a.Health.Set("provisioner", false, err.Error())
		return fmt.Errorf("hello listener %s: %w", listen, err)
	}
	p := provisioner.New(provisioner.Options{
		Store:   a.Store,
		Log:     a.Log.With("service", "provisioner"),
		Metrics: a.Metrics,
		NodeID:  a.Cfg.Node.ID,
	})
	_, portStr, _ := net.SplitHostPort(ln.Addr().String())
	port, _ := strconv.Atoi(portStr)
	(&provisioner.Handlers{
		Store:      a.Store,
		HelloPort:  uint16(port),
		ServerAddr: a.siteServerAddr,
		Retry:      p.Retry,
	}).Mount(a.Mux)

	a.Health.Set("provisioner", true, "listening on "+ln.Addr().String())
	a.goRun(func() {
		if err := p.Serve(ctx, ln); err != nil {
			a.Health.Set("provisioner", false, err.Error())
			a.Log.Error("provisioner stopped", "err", err)
		}
	})
	return a.startAgentAPI(ctx, p)
}

// startAgentAPI opens the listener device agents (branchbox-agent) talk
// to: registration for agent-initiated activation, and host-based
// activation relayed through the agent, run by p.
func (a *App) startAgentAPI(ctx context.Context, p *provisioner.Provisioner) error {
	listen := a.Cfg.Provisioner.AgentListen
	if listen == config.AgentOff {
		a.Health.Set("agent-api", true, "off (provisioner.agent_listen)")
		return nil
	}
	if listen == "" {
		listen = config.DefaultAgent
	}
	ln, err := agentapi.Listen(listen, a.Cfg.Node.DataDir)
	if err != nil {
		a.Health.Set("agent-api", false, err.Error())
		return fmt.Errorf("agent listener %s: %w", listen, err)
	}
	srv := agentapi.New(agentapi.Options{Store: a.Store, Provisioner: p, Log: a.Log.With("service", "agent-api")})
	a.Health.Set("agent-api", true, "listening on "+ln.Addr().String())
	a.goRun(func() {
		if err := srv.Serve(ctx, ln); err != nil {
			a.Health.Set("agent-api", false, err.Error())
			a.Log.Error("agent API stopped", "err", err)
		}
	})
	return nil
}

// siteServerAddr is where a site's devices reach this appliance: its
// address on the site interface, else the first advertised address.
func (a *App) siteServerAddr(s cluster.Site) (netip.Addr, error) {
	if s.Interface != "" {
		_, subnet, err := net.ParseCIDR(s.Subnet)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("site %q subnet: %w", s.Name, err)
		}
		ip, err := InterfaceAddr(s.Interface, subnet)
		if err != nil {
			return netip.Addr{}, err
		}
		addr, _ := netip.AddrFromSlice(ip)
		return addr.Unmap(), nil
	}
	for _, adv := range a.Cfg.Provisioner.Advertise {
		if addr, err := netip.ParseAddr(adv); err == nil && addr.Is4() {
			return addr, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("site %q is relayed and provisioner.advertise names no IPv4 address", s.Name)
}
