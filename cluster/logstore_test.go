package cluster

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/branchbox/branchbox/cluster/raftlog"
)

// An older release kept raft entries in raft.db; opening moves them into
// the segment log, keeps the stable keys, and survives a migration that
// stopped part-way.
func TestOpenRaftStoresMigratesBoltEntries(t *testing.T) {
	for _, tc := range []struct {
		name string
		prep func(t *testing.T, raftDir string)
	}{
		{"fresh migration", func(*testing.T, string) {}},
		{"interrupted migration left a partial copy", func(t *testing.T, raftDir string) {
			if err := os.MkdirAll(filepath.Join(raftDir, "log.migrating"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(raftDir, "log.migrating", fmt.Sprintf("%020d.seg", 1)), []byte("partial"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raftDir := t.TempDir()
			old, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(raftDir, "raft.db")})
			if err != nil {
				t.Fatal(err)
			}
			var want []*raft.Log
			for i := uint64(11); i <= 600; i++ {
				want = append(want, &raft.Log{Index: i, Term: 1 + i/100, Type: raft.LogCommand, Data: []byte(fmt.Sprintf("entry %d", i))})
			}
			if err := old.StoreLogs(want); err != nil {
				t.Fatal(err)
			}
			if err := old.SetUint64([]byte("CurrentTerm"), 7); err != nil {
				t.Fatal(err)
			}
			old.Close()
			tc.prep(t, raftDir)

			for round := range 2 { // the second open finds nothing to migrate
				s, err := openRaftStores(raftDir)
				if err != nil {
					t.Fatal(err)
				}
				first, _ := s.log.FirstIndex()
				last, _ := s.log.LastIndex()
				if first != 11 || last != 600 {
					t.Fatalf("round %d: log is %d-%d, want 11-600", round, first, last)
				}
				for _, w := range want {
					var got raft.Log
					if err := s.log.GetLog(w.Index, &got); err != nil {
						t.Fatalf("entry %d: %v", w.Index, err)
					}
					if got.Term != w.Term || !bytes.Equal(got.Data, w.Data) {
						t.Fatalf("entry %d = term %d %q", w.Index, got.Term, got.Data)
					}
				}
				if n, _ := s.stable.LastIndex(); n != 0 {
					t.Fatalf("raft.db still holds entries up to %d", n)
				}
				if term, err := s.stable.GetUint64([]byte("CurrentTerm")); err != nil || term != 7 {
					t.Fatalf("CurrentTerm = %d, %v", term, err)
				}
				if _, err := os.Stat(filepath.Join(raftDir, "log.migrating")); !os.IsNotExist(err) {
					t.Fatalf("log.migrating left behind: %v", err)
				}
				s.Close()
			}
		})
	}
}

// A follower's bolt log keeps entries below a snapshot it installed, so it
// can have a hole; only the run ending at the last entry is carried over.
func TestOpenRaftStoresMigratesOnlyTheRunAfterAHole(t *testing.T) {
	raftDir := t.TempDir()
	old, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(raftDir, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]uint64{{11, 100}, {201, 300}} {
		var logs []*raft.Log
		for i := r[0]; i <= r[1]; i++ {
			logs = append(logs, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte(fmt.Sprint(i))})
		}
		if err := old.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
	}
	old.Close()
	s, err := openRaftStores(raftDir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	first, _ := s.log.FirstIndex()
	last, _ := s.log.LastIndex()
	if first != 201 || last != 300 {
		t.Fatalf("migrated log is %d-%d, want 201-300", first, last)
	}
}

// BenchmarkRaftLogStores writes batches of lease-sized entries, each batch
// durable before the next, into raftlog and into raft-boltdb (the store it
// replaced) on the same disk: make bench prints their ratio.
func BenchmarkRaftLogStores(b *testing.B) {
	stores := []struct {
		name string
		open func(dir string) (raft.LogStore, func() error, error)
	}{
		{"raftlog", func(dir string) (raft.LogStore, func() error, error) {
			s, err := raftlog.Open(dir, 0)
			if err != nil {
				return nil, nil, err
			}
			return s, s.Close, nil
		}},
		{"boltdb", func(dir string) (raft.LogStore, func() error, error) {
			s, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
			if err != nil {
				return nil, nil, err
			}
			return s, s.Close, nil
		}},
	}
	for _, batch := range []int{1, 16} {
		for _, st := range stores {
			b.Run(fmt.Sprintf("batch=%d/%s", batch, st.name), func(b *testing.B) {
				s, closer, err := st.open(b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				defer closer()
				data := bytes.Repeat([]byte{7}, 100) // about one binary lease
				next := uint64(1)
				var walls []time.Duration
				cpu0 := processCPU()
				for b.Loop() {
					logs := make([]*raft.Log, batch)
					for i := range logs {
						logs[i] = &raft.Log{Index: next, Term: 1, Type: raft.LogCommand, Data: data}
						next++
					}
					start := time.Now()
					if err := s.StoreLogs(logs); err != nil {
						b.Fatal(err)
					}
					walls = append(walls, time.Since(start))
				}
				b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
				// The tail is the disk's: every DHCP ACK waits for a commit,
				// and a slow flush holds up every commit queued behind it.
				slices.Sort(walls)
				for _, q := range []struct {
					unit string
					at   float64
				}{{"p99-µs", .99}, {"p99.9-µs", .999}} {
					b.ReportMetric(float64(walls[int(q.at*float64(len(walls)-1))].Microseconds()), q.unit)
				}
			})
		}
	}
}

// processCPU is this process's user+system time: a commit's cost on a
// small box is the CPU its flush takes, not only its wall time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
