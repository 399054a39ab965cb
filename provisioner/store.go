package provisioner

import (
	"context"

	"github.com/branchbox/branchbox/cluster"
)

// Store is what the provisioner needs from the replicated store.
type Store interface {
	Sites() []cluster.Site
	Site(name string) (cluster.Site, bool)
	Profile(name string) (cluster.Profile, bool)
	Device(uuid string) (cluster.Device, bool)
	Lease(ip string) (cluster.Lease, bool)
	OTP(uuid string) (cluster.OTP, bool)
	PSK(pid string) (cluster.PSKPair, bool)
	Apply(ctx context.Context, cmd cluster.Command) error
	Seal(plain []byte) (cluster.Sealed, error)
	Unseal(v cluster.Sealed) ([]byte, error)
	Authority(name string) (cluster.Authority, bool)
}
