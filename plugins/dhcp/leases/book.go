// Package leases allocates DHCP addresses. The replicated store is the only
// authority on who holds an address: every binding is a compare-and-set
// committed through it before the ACK leaves. The Book keeps, per site, an
// in-memory picture of the pool (committed bindings, offers in flight,
// quarantined and excluded addresses) so choosing a free address never
// scans the store and never waits for a commit.
package leases

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/branchbox/branchbox/cluster"
)

// ErrExhausted means a pool has no address left to offer.
var ErrExhausted = errors.New("address pool exhausted")

// maxPoolSize bounds one range so a typo such as a /8 cannot eat memory.
const maxPoolSize = 1 << 20

// Store is the part of the replicated store the book uses.
type Store interface {
	Leases() []cluster.Lease
	Lease(ip string) (cluster.Lease, bool)
	Apply(ctx context.Context, cmd cluster.Command) error
	ApplyLease(c cluster.LeaseCAS, deadline time.Time, done func(error))
}

// Config tunes a Book. Zero values take the defaults below.
type Config struct {
	OfferTTL      time.Duration // how long an offered address stays held; default 30s
	Quarantine    time.Duration // how long a declined address stays out of use; default 10m
	CommitTimeout time.Duration // bound on one commit through the store; default 5s
	Now           func() time.Time
}

// Book holds one Pool per site.
type Book struct {
	ctx   context.Context
	store Store
	cfg   Config

	mu    sync.Mutex
	pools map[string]*Pool
}

// NewBook returns an empty book. ctx bounds every commit it makes.
func NewBook(ctx context.Context, store Store, cfg Config) *Book {
	if cfg.OfferTTL <= 0 {
		cfg.OfferTTL = 30 * time.Second
	}
	if cfg.Quarantine <= 0 {
		cfg.Quarantine = 10 * time.Minute
	}
	if cfg.CommitTimeout <= 0 {
		cfg.CommitTimeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Book{ctx: ctx, store: store, cfg: cfg, pools: map[string]*Pool{}}
}

// Pool returns the allocator for a site's range [first, last]. A pool whose
// bounds did not change is kept, with its offers, and only gets the new
// exclusions; otherwise a fresh pool is loaded from the store. Two zero
// addresses give an empty pool, for sites that serve reservations only.
func (b *Book) Pool(site string, first, last netip.Addr, exclude []netip.Addr) (*Pool, error) {
	size := 0
	switch {
	case !first.IsValid() && !last.IsValid():
	case !first.Is4() || !last.Is4() || last.Less(first):
		return nil, fmt.Errorf("range %s-%s: need two IPv4 addresses, first <= last", first, last)
	default:
		size = int(u32(last)-u32(first)) + 1
	}
	if size > maxPoolSize {
		return nil, fmt.Errorf("range %s-%s: %d addresses is more than %d", first, last, size, maxPoolSize)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.pools[site]
	var base uint32
	if size > 0 {
		base = u32(first)
	}
	if !ok || p.base != base || len(p.slots) != size {
		p = &Pool{book: b, site: site, base: base, slots: make([]slot, size), byClient: map[string]netip.Addr{}}
		p.load(b.store.Leases())
		b.pools[site] = p
	}
	p.setExcluded(exclude)
	return p, nil
}

// Commit binds a lease in site's pool (see Pool.Commit). Every served
// site has one, made by the range plugin, reservation-only sites included.
func (b *Book) Commit(site string, l cluster.Lease, ttl time.Duration, done func(error)) {
	b.mu.Lock()
	p := b.pools[site]
	b.mu.Unlock()
	if p == nil {
		done(fmt.Errorf("site %q: no address pool", site))
		return
	}
	p.Commit(l, ttl, done)
}

// Retain forgets the pools of sites that no longer exist.
func (b *Book) Retain(sites map[string]bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for name := range b.pools {
		if !sites[name] {
			delete(b.pools, name)
		}
	}
}

// Sync reloads every pool's bindings from the store. The server calls it
// when it becomes leader, since another node may have committed leases.
func (b *Book) Sync() {
	all := b.store.Leases()
	b.mu.Lock()
	pools := make([]*Pool, 0, len(b.pools))
	for _, p := range b.pools {
		pools = append(pools, p)
	}
	b.mu.Unlock()
	for _, p := range pools {
		p.load(all)
	}
}

// Expire proposes a LeaseExpire when at least one lease (or quarantine) has
// run out, then reloads the pools. It returns how many leases were due.
// Only the leader calls it: followers never expire by their own clocks.
func (b *Book) Expire(ctx context.Context) (int, error) {
	now := b.cfg.Now()
	due := 0
	for _, l := range b.store.Leases() {
		if !l.Expires.After(now) {
			due++
		}
	}
	if due == 0 {
		return 0, nil
	}
	if err := b.store.Apply(ctx, cluster.LeaseExpire{Time: now}); err != nil {
		return due, fmt.Errorf("expire %d leases: %w", due, err)
	}
	b.Sync()
	return due, nil
}

func (b *Book) apply(cmd cluster.Command) error {
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.CommitTimeout)
	defer cancel()
	return b.store.Apply(ctx, cmd)
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addrOf(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
