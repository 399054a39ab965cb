package provisioner

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/provisioner/hello"
)

// The history steps that start an attempt: a hello (or a retry of one),
// or an agent's host-based request.
const (
	stepHello = "hello"
	stepAgent = "agent"
)

// ErrNotRetryable refuses a retry of a device that has not failed.
var ErrNotRetryable = errors.New("only a failed device can be retried")

// Retry starts a new session for a failed device from its last hello, as
// if the device had sent it again: after a failed attempt it stays in setup
// mode with its window open, so an admin who fixed the cause (a custom
// hash, the site's certificate, a profile) need not wait for its next hello.
func (p *Provisioner) Retry(uuid, actor string) error {
	d, ok := p.o.Store.Device(uuid)
	if !ok {
		return fmt.Errorf("device %q: %w", uuid, cluster.ErrNotFound)
	}
	if d.State != cluster.DeviceFailed {
		return fmt.Errorf("device %q is %s: %w", uuid, d.State, ErrNotRetryable)
	}
	if hostBasedLast(d) {
		return fmt.Errorf("device %q was last activated host-based, through its agent, which relays that session: run `branchbox-agent activate --acm` on the device again: %w", uuid, ErrNotRetryable)
	}
	src, err := netip.ParseAddr(d.IP)
	if err != nil {
		return fmt.Errorf("device %q has no address from a hello: %w", uuid, ErrNotRetryable)
	}
	u, err := hello.ParseUUID(uuid)
	if err != nil {
		return fmt.Errorf("device %q: %w", uuid, err)
	}
	h := hello.Hello{Version: hello.VersionPKI, UUID: u, PID: d.PID}
	if d.PID != "" {
		h.Version = hello.VersionPSK
	}
	for _, s := range d.Hashes {
		hs, err := parseHash(s)
		if err != nil {
			return fmt.Errorf("device %q hash %q: %w", uuid, s, err)
		}
		h.Hashes = append(h.Hashes, hs)
	}
	p.mu.Lock()
	ctx := p.serving
	p.mu.Unlock()
	if ctx == nil || ctx.Err() != nil {
		return errors.New("the provisioner is not running")
	}
	j := &job{p: p, src: src, h: h, uuid: d.UUID, at: p.o.Now(), id: requestID(), origin: "retry requested by " + actor}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.queue(ctx, j)
	}()
	return nil
}

// hostBasedLast says whether the device's last attempt came from its
// agent rather than a hello: its history's newest start of an attempt.
func hostBasedLast(d cluster.Device) bool {
	for i := len(d.History) - 1; i >= 0; i-- {
		switch d.History[i].Step {
		case stepAgent:
			return true
		case stepHello:
			return false
		}
	}
	return false
}

func parseHash(s string) (hello.Hash, error) {
	alg, x, ok := strings.Cut(s, ":")
	if !ok {
		return hello.Hash{}, errors.New("not alg:hex")
	}
	sum, err := hex.DecodeString(x)
	if err != nil {
		return hello.Hash{}, err
	}
	for _, a := range []hello.HashAlg{hello.SHA1, hello.SHA256, hello.SHA384} {
		if a.String() == alg && a.Size() == len(sum) {
			return hello.Hash{Alg: a, Sum: sum}, nil
		}
	}
	return hello.Hash{}, fmt.Errorf("unknown algorithm or length %s/%d", alg, len(sum))
}
