package leases

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/branchbox/branchbox/cluster"
)

type slotState uint8

const (
	slotFree slotState = iota
	slotOffered
	slotBound
	slotDeclined
)

// slot is the book's picture of one address of the range.
type slot struct {
	state    slotState
	excluded bool // never handed out dynamically (router, server, reservations)
	client   string
	until    time.Time // offer, lease or quarantine end
}

// heldAgainst reports whether the slot is unavailable to client at now.
func (s slot) heldAgainst(client string, now time.Time) bool {
	if s.state == slotFree || !now.Before(s.until) {
		return false
	}
	return s.state == slotDeclined || s.client != client
}

// Pool allocates the dynamic range of one site. Its lock covers memory
// only and is never held across a commit, so one slow commit never blocks
// other clients.
type Pool struct {
	book *Book
	site string
	base uint32

	mu       sync.Mutex
	slots    []slot
	next     int                   // next-fit cursor, so freed addresses rest before reuse
	byClient map[string]netip.Addr // a client's offered or bound address
}

// Contains reports whether a is inside the dynamic range.
func (p *Pool) Contains(a netip.Addr) bool {
	_, ok := p.index(a)
	return ok
}

// Excluded reports whether a is in the range but never handed out dynamically.
func (p *Pool) Excluded(a netip.Addr) bool {
	i, ok := p.index(a)
	if !ok {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.slots[i].excluded
}

// Offer picks an address for client: the one it already holds, else the
// one it asks for when free, else the next free one. The address is held
// for the offer TTL; nothing is committed.
func (p *Pool) Offer(client string, want netip.Addr) (netip.Addr, error) {
	now := p.book.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, ok := p.byClient[client]; ok {
		if i, in := p.index(cur); in {
			s := &p.slots[i]
			if !s.excluded && s.client == client && (s.state == slotBound || s.state == slotOffered) && now.Before(s.until) {
				if s.state == slotOffered {
					s.until = now.Add(p.book.cfg.OfferTTL)
				}
				return cur, nil
			}
		}
	}
	if i, in := p.index(want); in && p.free(i, client, now) {
		return p.hold(i, client, now), nil
	}
	for n := range len(p.slots) {
		i := (p.next + n) % len(p.slots)
		if p.free(i, client, now) {
			p.next = (i + 1) % len(p.slots)
			return p.hold(i, client, now), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("site %q: %w", p.site, ErrExhausted)
}

// Commit binds l.IP to l.ClientID for ttl through the store's
// compare-and-set, stamping the times itself, and returns without waiting:
// done gets the outcome, on the store's committing goroutine, after the
// book has recorded it. ErrConflict (wrapped) means another client holds
// the address; that is known at once when the book already says so.
func (p *Pool) Commit(l cluster.Lease, ttl time.Duration, done func(error)) {
	ip, err := netip.ParseAddr(l.IP)
	if err != nil {
		done(fmt.Errorf("lease ip %q: %w", l.IP, err))
		return
	}
	now := p.book.cfg.Now()
	l.Site, l.State, l.Start, l.Expires = p.site, cluster.LeaseBound, now, now.Add(ttl)
	if i, in := p.index(ip); in {
		p.mu.Lock()
		held := p.slots[i].heldAgainst(l.ClientID, now)
		p.mu.Unlock()
		if held {
			done(fmt.Errorf("lease %s: %w", ip, cluster.ErrConflict))
			return
		}
	}
	p.book.store.ApplyLease(cluster.LeaseCAS{Lease: l, Time: now}, time.Now().Add(p.book.cfg.CommitTimeout), func(err error) {
		p.mu.Lock()
		switch {
		case err == nil:
			p.bind(ip, l.ClientID, slotBound, l.Expires)
		case errors.Is(err, cluster.ErrConflict):
			p.refresh(ip)
		}
		p.mu.Unlock()
		done(err)
	})
}

// Release frees ip if client holds it. A release for an address the
// client does not hold is not an error: the client may be retrying.
func (p *Pool) Release(client string, ip netip.Addr) error {
	err := p.book.apply(cluster.LeaseRelease{IP: ip.String(), ClientID: client, Time: p.book.cfg.Now()})
	if err != nil && !errors.Is(err, cluster.ErrNotFound) {
		return fmt.Errorf("release %s: %w", ip, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unbind(ip, client)
	return nil
}

// Decline quarantines ip after client reported it in use on the wire. Only
// the client bound to the address may decline it, so a stray DECLINE
// cannot take addresses out of service.
func (p *Pool) Decline(client, mac string, ip netip.Addr) error {
	cur, ok := p.book.store.Lease(ip.String())
	if !ok || cur.ClientID != client || cur.State != cluster.LeaseBound {
		return fmt.Errorf("decline %s: %w", ip, cluster.ErrNotFound)
	}
	now := p.book.cfg.Now()
	until := now.Add(p.book.cfg.Quarantine)
	l := cluster.Lease{IP: ip.String(), MAC: mac, ClientID: client, Site: p.site, State: cluster.LeaseDeclined, Start: now, Expires: until}
	if err := p.book.apply(cluster.LeaseCAS{Lease: l, Time: now}); err != nil {
		return fmt.Errorf("decline %s: %w", ip, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bind(ip, client, slotDeclined, until)
	delete(p.byClient, client)
	return nil
}

func (p *Pool) index(a netip.Addr) (int, bool) {
	if !a.Is4() {
		return 0, false
	}
	off := u32(a) - p.base
	if u32(a) < p.base || off >= uint32(len(p.slots)) {
		return 0, false
	}
	return int(off), true
}

func (p *Pool) free(i int, client string, now time.Time) bool {
	s := p.slots[i]
	return !s.excluded && !s.heldAgainst(client, now)
}

// hold marks slot i offered to client, dropping any other offer it had.
func (p *Pool) hold(i int, client string, now time.Time) netip.Addr {
	a := addrOf(p.base + uint32(i))
	s := p.slots[i]
	if s.state == slotBound && s.client == client && now.Before(s.until) {
		return a
	}
	if old, ok := p.byClient[client]; ok && old != a {
		if j, in := p.index(old); in && p.slots[j].client == client && p.slots[j].state == slotOffered {
			p.slots[j] = slot{excluded: p.slots[j].excluded}
		}
	}
	p.slots[i] = slot{state: slotOffered, client: client, until: now.Add(p.book.cfg.OfferTTL)}
	p.byClient[client] = a
	return a
}

// bind records a committed binding. The store drops a client's other
// bindings in the site on commit, and so does the book.
func (p *Pool) bind(ip netip.Addr, client string, st slotState, until time.Time) {
	if old, ok := p.byClient[client]; ok && old != ip {
		p.unbind(old, client)
	}
	if i, in := p.index(ip); in {
		p.slots[i] = slot{state: st, excluded: p.slots[i].excluded, client: client, until: until}
	}
	p.byClient[client] = ip
}

func (p *Pool) unbind(ip netip.Addr, client string) {
	if i, in := p.index(ip); in && p.slots[i].client == client && p.slots[i].state != slotDeclined {
		p.slots[i] = slot{excluded: p.slots[i].excluded}
	}
	if p.byClient[client] == ip {
		delete(p.byClient, client)
	}
}

// refresh re-reads one address from the store after a lost compare-and-set.
func (p *Pool) refresh(ip netip.Addr) {
	i, in := p.index(ip)
	if !in {
		return
	}
	l, ok := p.book.store.Lease(ip.String())
	if !ok {
		p.slots[i] = slot{excluded: p.slots[i].excluded}
		return
	}
	p.slots[i] = slotFromLease(l, p.slots[i].excluded)
}

// load replaces committed state with the store's, keeping live offers.
func (p *Pool) load(all []cluster.Lease) {
	now := p.book.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.byClient)
	for i, s := range p.slots {
		if s.state == slotOffered && now.Before(s.until) {
			p.byClient[s.client] = addrOf(p.base + uint32(i))
			continue
		}
		p.slots[i] = slot{excluded: s.excluded}
	}
	for _, l := range all {
		if l.Site != p.site {
			continue
		}
		ip, err := netip.ParseAddr(l.IP)
		if err != nil {
			continue
		}
		if i, in := p.index(ip); in {
			p.slots[i] = slotFromLease(l, p.slots[i].excluded)
		}
		if l.State == cluster.LeaseBound {
			p.byClient[l.ClientID] = ip
		}
	}
}

func (p *Pool) setExcluded(addrs []netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.slots {
		p.slots[i].excluded = false
	}
	for _, a := range addrs {
		if i, in := p.index(a); in {
			p.slots[i].excluded = true
		}
	}
}

func slotFromLease(l cluster.Lease, excluded bool) slot {
	st := slotBound
	if l.State == cluster.LeaseDeclined {
		st = slotDeclined
	}
	return slot{state: st, excluded: excluded, client: l.ClientID, until: l.Expires}
}
