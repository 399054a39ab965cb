package leases

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/branchbox/branchbox/cluster"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newPool(t *testing.T, store *cluster.Store, clk *clock, first, last string, exclude ...string) (*Book, *Pool) {
	t.Helper()
	b := NewBook(context.Background(), store, Config{Now: clk.now, OfferTTL: 30 * time.Second, Quarantine: 10 * time.Minute})
	var ex []netip.Addr
	for _, e := range exclude {
		ex = append(ex, netip.MustParseAddr(e))
	}
	p, err := b.Pool("s", netip.MustParseAddr(first), netip.MustParseAddr(last), ex)
	if err != nil {
		t.Fatal(err)
	}
	return b, p
}

func offer(t *testing.T, p *Pool, client, want string) string {
	t.Helper()
	var w netip.Addr
	if want != "" {
		w = netip.MustParseAddr(want)
	}
	a, err := p.Offer(client, w)
	if err != nil {
		return err.Error()
	}
	return a.String()
}

func TestOffer(t *testing.T) {
	clk := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	_, p := newPool(t, cluster.NewMemory(), clk, "10.0.0.10", "10.0.0.13", "10.0.0.11")
	steps := []struct {
		client, want, got string
	}{
		{"a", "", "10.0.0.10"},
		{"a", "", "10.0.0.10"},          // sticky
		{"b", "10.0.0.10", "10.0.0.12"}, // wanted address is a's offer; .11 excluded
		{"c", "10.0.0.13", "10.0.0.13"}, // wanted and free
		{"d", "", "site \"s\": address pool exhausted"},
	}
	for i, s := range steps {
		if got := offer(t, p, s.client, s.want); got != s.got {
			t.Fatalf("step %d (%s): offered %s, want %s", i, s.client, got, s.got)
		}
	}
	clk.t = clk.t.Add(31 * time.Second) // offers lapse; next-fit goes on from .12
	if got := offer(t, p, "d", ""); got != "10.0.0.13" {
		t.Fatalf("after offers lapsed: %s", got)
	}
}

func TestCommitReleaseDecline(t *testing.T) {
	clk := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	store := cluster.NewMemory()
	_, p := newPool(t, store, clk, "10.0.0.10", "10.0.0.20")
	ip := offer(t, p, "a", "")
	if err := commit(p, cluster.Lease{IP: ip, ClientID: "a"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := commit(p, cluster.Lease{IP: ip, ClientID: "b"}, time.Hour); !errors.Is(err, cluster.ErrConflict) {
		t.Fatalf("second client on %s: %v", ip, err)
	}
	// Moving a client frees its old address, in the store and the book.
	if err := commit(p, cluster.Lease{IP: "10.0.0.15", ClientID: "a"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, ok := store.Lease(ip); ok {
		t.Fatalf("old address %s still stored", ip)
	}
	if got := offer(t, p, "b", ip); got != ip {
		t.Fatalf("freed address not offered: %s", got)
	}
	if err := p.Release("a", netip.MustParseAddr("10.0.0.15")); err != nil {
		t.Fatal(err)
	}
	if err := p.Release("a", netip.MustParseAddr("10.0.0.15")); err != nil {
		t.Fatalf("a repeated release must be harmless: %v", err)
	}
	if err := commit(p, cluster.Lease{IP: "10.0.0.16", ClientID: "c"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := p.Decline("d", "", netip.MustParseAddr("10.0.0.16")); err == nil {
		t.Fatal("a client declined an address it does not hold")
	}
	if err := p.Decline("c", "02:00:00:00:00:0c", netip.MustParseAddr("10.0.0.16")); err != nil {
		t.Fatal(err)
	}
	if err := commit(p, cluster.Lease{IP: "10.0.0.16", ClientID: "c"}, time.Hour); !errors.Is(err, cluster.ErrConflict) {
		t.Fatalf("quarantined address committed again: %v", err)
	}
}

func TestSyncAndExpire(t *testing.T) {
	clk := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	store := cluster.NewMemory()
	// Another leader committed this lease before we took over.
	if err := store.Apply(context.Background(), cluster.LeaseCAS{Lease: cluster.Lease{IP: "10.0.0.10", ClientID: "x", Site: "s", State: cluster.LeaseBound, Expires: clk.t.Add(time.Minute)}, Time: clk.t}); err != nil {
		t.Fatal(err)
	}
	b, p := newPool(t, store, clk, "10.0.0.10", "10.0.0.11")
	if got := offer(t, p, "y", ""); got != "10.0.0.11" {
		t.Fatalf("loaded pool offered %s", got)
	}
	if got := offer(t, p, "x", ""); got != "10.0.0.10" {
		t.Fatalf("holder of a loaded lease offered %s", got)
	}
	if n, err := b.Expire(context.Background()); n != 0 || err != nil {
		t.Fatalf("nothing due yet: %d, %v", n, err)
	}
	clk.t = clk.t.Add(2 * time.Minute)
	if n, err := b.Expire(context.Background()); n != 1 || err != nil {
		t.Fatalf("expire: %d, %v", n, err)
	}
	if _, ok := store.Lease("10.0.0.10"); ok {
		t.Fatal("expired lease still stored")
	}
	if got := offer(t, p, "z", "10.0.0.10"); got != "10.0.0.10" {
		t.Fatalf("reclaimed address offered as %s", got)
	}
}

func TestPoolBounds(t *testing.T) {
	b := NewBook(context.Background(), cluster.NewMemory(), Config{})
	tests := []struct {
		first, last string
		ok          bool
	}{
		{"10.0.0.1", "10.0.0.9", true},
		{"10.0.0.9", "10.0.0.1", false},
		{"10.0.0.0", "10.255.255.255", false}, // too large
		{"::1", "::2", false},
	}
	for _, tt := range tests {
		_, err := b.Pool("s", netip.MustParseAddr(tt.first), netip.MustParseAddr(tt.last), nil)
		if (err == nil) != tt.ok {
			t.Errorf("%s-%s: err = %v", tt.first, tt.last, err)
		}
	}
	empty, err := b.Pool("r", netip.Addr{}, netip.Addr{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := empty.Offer("a", netip.Addr{}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("reservation-only pool offered: %v", err)
	}
}

// commit waits for Pool.Commit's outcome.
func commit(p *Pool, l cluster.Lease, ttl time.Duration) error {
	out := make(chan error, 1)
	p.Commit(l, ttl, func(err error) { out <- err })
	return <-out
}
