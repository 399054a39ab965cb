// Package appliance is the composition root: it turns a config into a
// running box — the replicated store, the admin API, DHCP, DNS and the
// provisioner — and stops them in reverse order.
package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/branchbox/branchbox/appliance/api"
	"github.com/branchbox/branchbox/appliance/config"
	"github.com/branchbox/branchbox/cluster"
)

// App is one running appliance. Services started by the wire_*.go files
// read what they need from it.
type App struct {
	Cfg     *config.Config
	Version string
	Node    *cluster.Node
	Store   *cluster.Store
	Log     *slog.Logger
	Metrics *prometheus.Registry
	Health  *Health
	// Mux is the admin API's router; services may mount their own
	// endpoints on it under /api/v1/ before the API starts serving.
	Mux *http.ServeMux

	wg      sync.WaitGroup
	closers []func()
}

// Run starts everything and blocks until ctx is cancelled, then shuts down.
func Run(ctx context.Context, cfg *config.Config, version string, log *slog.Logger) error {
	a := &App{
		Cfg:     cfg,
		Version: version,
		Log:     log,
		Metrics: prometheus.NewRegistry(),
		Health:  NewHealth(),
		Mux:     http.NewServeMux(),
	}
	a.Metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	defer a.shutdown()

	cc, err := ClusterConfig(cfg)
	if err != nil {
		return err
	}
	cc.Logger = log
	commits := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "branchbox_raft_commit_seconds",
		Help:    "Time from proposing a raft entry on the leader to its commit and apply (lease batches included).",
		Buckets: prometheus.ExponentialBuckets(100e-6, 2, 16), // 100 µs … 3.3 s
	})
	a.Metrics.MustRegister(commits)
	cc.OnCommit = func(d time.Duration) { commits.Observe(d.Seconds()) }
	node, err := cluster.Open(cc)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	a.Node, a.Store = node, node.Store
	a.onClose(func() {
		if err := node.Close(); err != nil {
			log.Error("closing store", "err", err)
		}
	})
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = node.WaitLeader(waitCtx)
	cancel()
	if err != nil && !a.clustered() {
		return err
	}
	if err != nil {
		// A member that restarts on the minority side still serves what
		// it can (the API, stale DNS); its writes wait for a leader.
		log.Warn("starting without a cluster leader", "err", err)
	}
	a.Metrics.MustRegister(newRaftCollector(node), newStoreCollector(node.Store))
	if err := a.applyConfig(ctx); err != nil {
		return err
	}

	token, err := api.LoadOrCreateToken(cfg.Node.DataDir)
	if err != nil {
		return err
	}
	services := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"dhcp", a.startDHCP},
		{"dns", a.startDNS},
		{"provisioner", a.startProvisioner},
	}
	if a.witness() {
		for _, s := range services {
			a.Health.Set(s.name, true, "not run on a witness")
		}
		services = nil
	}
	for _, start := range services {
		if err := start.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", start.name, err)
		}
	}
	if a.clustered() {
		a.goRun(func() { a.publishMember(ctx) })
	}
	a.mountSiteCert(a.Mux)
	srv := api.NewServer(api.Options{
		Store:   a.Store,
		Cluster: node,
		Status:  a.status,
		Token:   token,
		Metrics: a.Metrics,
		Log:     log,
		Mux:     a.Mux,
		Sites:   siteWriter{a},
	})
	ln, err := api.Listen(cfg.Node.API, cfg.Node.DataDir)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	a.goRun(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("api stopped", "err", err)
		}
	})
	a.onClose(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	})
	log.Info("branchbox ready", "node", cfg.Node.ID, "version", version, "api", ln.Addr().String(),
		"role", node.State(), "member", node.Role(), "sites", len(a.Store.Sites()))

	<-ctx.Done()
	log.Info("shutting down")
	return nil
}

// goRun runs fn in a goroutine that shutdown waits for.
func (a *App) goRun(fn func()) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		fn()
	}()
}

// onClose registers a stop action; they run last-registered first.
func (a *App) onClose(fn func()) { a.closers = append(a.closers, fn) }

func (a *App) shutdown() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
	a.wg.Wait()
}

func (a *App) status() api.Status {
	st := api.Status{
		Node:     a.Cfg.Node.ID,
		Version:  a.Version,
		Role:     a.Node.State(),
		Leader:   a.Node.Leader(),
		Services: map[string]api.ServiceStatus{},
	}
	for name, h := range a.Health.Snapshot() {
		st.Services[name] = api.ServiceStatus{OK: h.OK, Detail: h.Detail, Since: h.Since}
	}
	return st
}

// applyConfig writes the config file's sites and profiles to the store.
// A single box does it at once. A cluster member does it through the
// leader, in the background when there is no leader yet, and only when
// its file names sites or profiles: a member whose file names none (a
// witness, a box joined only to replicate) must not remove the others'.
func (a *App) applyConfig(ctx context.Context) error {
	if !a.clustered() {
		if err := syncConfig(ctx, a.Store, a.Cfg, a.Log); err != nil {
			return fmt.Errorf("applying config to the store: %w", err)
		}
		return nil
	}
	if len(a.Cfg.Sites) == 0 && len(a.Cfg.Profiles) == 0 {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err := syncConfig(sctx, a.Store, a.Cfg, a.Log)
	cancel()
	if err == nil {
		return nil
	}
	a.Log.Warn("config not yet applied to the cluster; retrying", "err", err)
	a.goRun(func() {
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Second):
			}
			sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			err := syncConfig(sctx, a.Store, a.Cfg, a.Log)
			cancel()
			if err == nil {
				a.Log.Info("config applied to the cluster")
				return
			}
		}
	})
	return nil
}

// InterfaceAddr returns this box's IPv4 address on the named interface
// that falls inside subnet, for answers that must name "the appliance on
// this LAN" (DHCP option 6, ProvisionServer records).
func InterfaceAddr(ifname string, subnet *net.IPNet) (net.IP, error) {
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("interface %q: %w", ifname, err)
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return nil, fmt.Errorf("interface %q: %w", ifname, err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && subnet.Contains(ipn.IP) {
			return ipn.IP.To4(), nil
		}
	}
	return nil, fmt.Errorf("interface %q has no address in %s", ifname, subnet)
}
