package provisioner

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/provisioner/hello"
	"github.com/branchbox/branchbox/provisioner/session"
)

// ErrBusy: the device is already being activated, here or by another
// member.
var ErrBusy = errors.New("device is already being activated")

// HostBasedRequest is an agent's request to activate the device it runs
// on from the host (amt-protocol.md §3.3), relayed through the agent.
type HostBasedRequest struct {
	UUID string
	// Site is the site the agent authenticated for.
	Site string
	// IP is the device's wired address as the agent read it; it names the
	// device (DHCP lease) and is where the TLS feature's certificate is
	// checked. May be invalid (unknown).
	IP netip.Addr
	// Hashes are the device's active root hashes.
	Hashes     []hello.Hash
	AMTVersion string
	// Origin says who asked, for the device's history and the audit log.
	Origin string
}

// Claimed is a host-based activation that owns its device — a session
// slot and the device record's "activating" — until Run or Abandon.
type Claimed struct {
	j       *job
	params  prepared
	release func()
}

// ClaimHostBased records the request, prepares the session exactly as for
// a hello (site certificate and its firmware rules, device name, profile
// and its passwords, features) and claims the device. An error is why the
// device cannot be activated, already recorded on it (ErrBusy aside).
func (p *Provisioner) ClaimHostBased(ctx context.Context, r HostBasedRequest) (*Claimed, error) {
	st := p.o.Store
	uuid, err := hello.NormalizeUUID(r.UUID)
	if err != nil {
		return nil, &inputError{err}
	}
	site, ok := st.Site(r.Site)
	if !ok {
		return nil, fmt.Errorf("site %q: %w", r.Site, cluster.ErrNotFound)
	}
	p.mu.Lock()
	if p.inflight[uuid] {
		p.mu.Unlock()
		return nil, fmt.Errorf("device %s: %w", uuid, ErrBusy)
	}
	p.inflight[uuid] = true
	p.mu.Unlock()
	var once sync.Once
	unmark := func() {
		p.mu.Lock()
		delete(p.inflight, uuid)
		p.mu.Unlock()
	}
	release := func() { once.Do(unmark) }

	u, _ := hello.ParseUUID(uuid)
	j := &job{p: p, src: r.IP, h: hello.Hello{Version: hello.VersionPKI, UUID: u, Hashes: r.Hashes}, uuid: uuid, at: p.o.Now(), id: requestID(), origin: r.Origin}
	dev, haveDev := st.Device(uuid)
	j.guard = []string{cluster.DeviceActivating}
	if haveDev && dev.State == cluster.DeviceActivating && p.o.Now().Sub(dev.Updated) > p.o.StaleAfter {
		j.guard = nil
	}
	empty := ""
	detail := "host-based activation requested by " + r.Origin
	u1 := cluster.DeviceUpdate{
		Site: site.Name, Hashes: j.h.HashStrings(), AMTVersion: r.AMTVersion,
		State: cluster.DeviceSeen, LastError: &empty, IfStateNot: j.guard,
		Event: cluster.DeviceEvent{State: cluster.DeviceSeen, Step: stepAgent, Detail: detail},
	}
	if r.IP.IsValid() {
		u1.IP = r.IP.String()
	}
	err = j.update(ctx, u1)
	if errors.Is(err, cluster.ErrConflict) {
		release()
		return nil, fmt.Errorf("device %s: %w", uuid, ErrBusy)
	}
	if err != nil {
		release()
		return nil, fmt.Errorf("recording device %s: %w", uuid, err)
	}
	j.audit(ctx, "agent", detail)

	params, err := j.prepare(ctx, site, dev, haveDev)
	if err != nil {
		j.fail(ctx, err.Error(), cluster.DeviceActivating)
		release()
		return nil, err
	}
	if !r.IP.IsValid() {
		params.session.Addr = "" // no address to check the TLS feature at
	}
	select {
	case p.sessions <- struct{}{}:
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
	release = func() { once.Do(func() { <-p.sessions; unmark() }) }

	err = j.update(ctx, cluster.DeviceUpdate{
		State: cluster.DeviceActivating, FQDN: params.fqdn, Profile: params.profile, IfStateNot: j.guard,
		Event: cluster.DeviceEvent{State: cluster.DeviceActivating, Step: "session", Detail: "host-based activation through the agent"},
	})
	if errors.Is(err, cluster.ErrConflict) {
		release()
		return nil, fmt.Errorf("device %s: %w", uuid, ErrBusy)
	}
	if err != nil {
		release()
		return nil, fmt.Errorf("claiming device %s: %w", uuid, err)
	}
	return &Claimed{j: j, params: params, release: release}, nil
}

// Run activates the device over t and records the outcome, step by step
// in the audit log, as a Remote Configuration session does. The error is
// the reason recorded on the device.
func (c *Claimed) Run(ctx context.Context, t session.HostTransport) (session.Result, error) {
	defer c.release()
	sc := c.params.cert
	return c.j.activate(ctx, c.params.session, func(ctx context.Context, sp session.Params) (session.Result, error) {
		return session.HostBased(ctx, session.HostBasedParams{Params: sp, Transport: t, Chain: sc.chain, Key: sc.key})
	})
}

// Abandon gives the device up without a session, recording why.
func (c *Claimed) Abandon(reason string) {
	defer c.release()
	c.j.fail(context.Background(), reason)
}
