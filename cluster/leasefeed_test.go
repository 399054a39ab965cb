package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"
)

// The feed names every address whose lease a command set or removed, in
// order, and nothing for commands that change no lease.
func TestLeaseChanges(t *testing.T) {
	lease := func(ip, client string, expires time.Duration) LeaseCAS {
		return LeaseCAS{Lease: Lease{IP: ip, ClientID: client, Site: "s", Expires: t0.Add(expires)}, Time: t0}
	}
	tests := []struct {
		name string
		cmd  Command
		want []string // beyond what the setup already reported
	}{
		{"new lease", lease("10.0.0.9", "c", time.Hour), []string{"10.0.0.9"}},
		{"renewal", lease("10.0.0.5", "a", 2*time.Hour), []string{"10.0.0.5", "10.0.0.5"}},
		{"client moves: old address dropped", lease("10.0.0.7", "a", time.Hour), []string{"10.0.0.5", "10.0.0.7"}},
		{"conflict changes nothing", lease("10.0.0.5", "c", time.Hour), nil},
		{"batch", LeaseBatch{Items: []LeaseCAS{lease("10.0.0.8", "d", time.Hour), lease("10.0.0.5", "x", time.Hour)}}, []string{"10.0.0.8"}},
		{"release", LeaseRelease{IP: "10.0.0.6", ClientID: "b", Time: t0}, []string{"10.0.0.6"}},
		{"expiry", LeaseExpire{Time: t0.Add(30 * time.Minute)}, []string{"10.0.0.6"}},
		{"a site changes no lease", PutSite{Site: Site{Name: "s", Subnet: "10.0.0.0/24"}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewMemory()
			ctx := context.Background()
			s.Apply(ctx, lease("10.0.0.5", "a", time.Hour))
			s.Apply(ctx, lease("10.0.0.6", "b", time.Minute))
			before, pos, ok := s.LeaseChanges(0)
			if !ok || !slices.Equal(before, []string{"10.0.0.5", "10.0.0.6"}) {
				t.Fatalf("setup: %v, %v", before, ok)
			}
			if batch, isBatch := tc.cmd.(LeaseBatch); isBatch {
				// LeaseBatch is what the batcher proposes; commitBatch is its path.
				if _, err := s.commitBatch(ctx, batch.Items); err != nil {
					t.Fatal(err)
				}
			} else {
				s.Apply(ctx, tc.cmd)
			}
			got, next, ok := s.LeaseChanges(pos)
			if !ok || !slices.Equal(got, tc.want) || next != pos+uint64(len(tc.want)) {
				t.Errorf("changes = %v (next %d, ok %v), want %v (next %d)", got, next, ok, tc.want, pos+uint64(len(tc.want)))
			}
		})
	}
}

// A reader that fell further behind than the feed remembers, or whose
// position predates a snapshot restore, is told to read every lease.
func TestLeaseChangesLost(t *testing.T) {
	ctx := context.Background()
	s := NewMemory()
	for i := range leaseFeedSize + 1 {
		ip := fmt.Sprintf("10.0.%d.1", i%10)
		s.Apply(ctx, LeaseCAS{Lease: Lease{IP: ip, ClientID: "a", Site: "s", Expires: t0.Add(time.Hour)}, Time: t0})
	}
	if _, _, ok := s.LeaseChanges(0); ok {
		t.Error("position 0 still answered after more than leaseFeedSize changes")
	}
	_, pos, _ := s.LeaseChanges(0)
	if ips, _, ok := s.LeaseChanges(pos - 10); !ok || len(ips) != 10 {
		t.Errorf("the last 10 changes: %d, %v", len(ips), ok)
	}

	snap, err := fsm{s}.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := snap.Persist(&fakeSink{Buffer: &buf}); err != nil {
		t.Fatal(err)
	}
	if err := (fsm{s}).Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := s.LeaseChanges(pos); ok {
		t.Error("a position from before the restore is still answered")
	}
	_, after, _ := s.LeaseChanges(pos)
	if ips, _, ok := s.LeaseChanges(after); !ok || len(ips) != 0 {
		t.Errorf("from the restore on: %v, %v", ips, ok)
	}
	if _, _, ok := s.LeaseChanges(after + 1); ok {
		t.Error("a position past the end is answered")
	}
}
