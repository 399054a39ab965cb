package server

import (
	"context"
	"time"

	"github.com/branchbox/branchbox/cluster"
)

// Store is the part of the replicated store the DHCP server uses.
type Store interface {
	Sites() []cluster.Site
	Leases() []cluster.Lease
	Lease(ip string) (cluster.Lease, bool)
	Apply(ctx context.Context, cmd cluster.Command) error
	ApplyLease(c cluster.LeaseCAS, deadline time.Time, done func(error))
	IsLeader() bool
	WatchConfig() (<-chan struct{}, func())
}
