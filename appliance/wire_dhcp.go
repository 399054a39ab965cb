package appliance

import (
	"context"

	"github.com/branchbox/branchbox/plugins/dhcp/server"
)

// startDHCP runs the DHCP server over the store. It serves whatever sites
// the store holds, follows changes to them, and answers only while this
// node leads; its condition shows on the status page as "dhcp".
func (a *App) startDHCP(ctx context.Context) error {
	srv := server.New(a.Store, server.Options{
		RelayListen: a.Cfg.DHCP.RelayListen,
		Logger:      a.Log,
		Registerer:  a.Metrics,
		Health:      a.Health.Reporter("dhcp"),
		Peer:        a.dhcpPeer(),
	})
	a.goRun(func() {
		if err := srv.Run(ctx); err != nil {
			a.Log.Error("dhcp stopped", "err", err)
			a.Health.Set("dhcp", false, err.Error())
		}
	})
	return nil
}
