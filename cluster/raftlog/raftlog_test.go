package raftlog

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func entry(index, term uint64, size int) *raft.Log {
	return &raft.Log{
		Index: index, Term: term, Type: raft.LogCommand,
		Data:       bytes.Repeat([]byte{byte(index)}, size),
		AppendedAt: time.Unix(1700000000, int64(index)),
	}
}

func entries(from, to, term uint64, size int) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		out = append(out, entry(i, term, size))
	}
	return out
}

func open(t *testing.T, dir string, seg int64) *Store {
	t.Helper()
	s, err := Open(dir, seg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func reopen(t *testing.T, s *Store) *Store {
	t.Helper()
	s.Close()
	return open(t, s.dir, s.segSize)
}

func store(t *testing.T, s *Store, logs []*raft.Log) {
	t.Helper()
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
}

// check asserts the log is exactly first..last with the given terms.
func check(t *testing.T, s *Store, first, last uint64, term func(uint64) uint64, size int) {
	t.Helper()
	f, _ := s.FirstIndex()
	l, _ := s.LastIndex()
	if f != first || l != last {
		t.Fatalf("log is %d-%d, want %d-%d", f, l, first, last)
	}
	for i := first; i <= last && first > 0; i++ {
		var got raft.Log
		if err := s.GetLog(i, &got); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		want := entry(i, term(i), size)
		if got.Index != i || got.Term != want.Term || got.Type != want.Type || !bytes.Equal(got.Data, want.Data) || !got.AppendedAt.Equal(want.AppendedAt) {
			t.Fatalf("entry %d = {%d %d %v %d bytes %v}, want term %d", i, got.Index, got.Term, got.Type, len(got.Data), got.AppendedAt, want.Term)
		}
	}
	var l0 raft.Log
	for _, i := range []uint64{first - 1, last + 1} {
		if i == 0 {
			continue
		}
		if err := s.GetLog(i, &l0); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("entry %d outside the log: err %v, want ErrLogNotFound", i, err)
		}
	}
}

func term1(uint64) uint64 { return 1 }

func TestRoundTripAcrossSegmentsAndReopen(t *testing.T) {
	for _, tc := range []struct {
		name string
		seg  int64
		size int
	}{
		{"one segment", 1 << 20, 100},
		{"many segments", 4096, 300},
		{"entries larger than a segment", 4096, 10000},
		{"empty data", 4096, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, t.TempDir(), tc.seg)
			check(t, s, 0, 0, term1, tc.size)
			for i := uint64(1); i <= 60; i += 6 {
				store(t, s, entries(i, i+5, 1, tc.size))
			}
			check(t, s, 1, 60, term1, tc.size)
			s = reopen(t, s)
			check(t, s, 1, 60, term1, tc.size)
			store(t, s, entries(61, 70, 1, tc.size))
			check(t, reopen(t, s), 1, 70, term1, tc.size)
		})
	}
}

func TestExtensionsAndZeroTime(t *testing.T) {
	s := open(t, t.TempDir(), 64<<10)
	store(t, s, []*raft.Log{{Index: 7, Term: 3, Type: raft.LogConfiguration, Data: []byte("cfg"), Extensions: []byte("ext")}})
	s = reopen(t, s)
	var got raft.Log
	if err := s.GetLog(7, &got); err != nil {
		t.Fatal(err)
	}
	if got.Type != raft.LogConfiguration || string(got.Data) != "cfg" || string(got.Extensions) != "ext" || !got.AppendedAt.IsZero() {
		t.Fatalf("got %+v", got)
	}
}

func TestStoreRefusesOverlapsAndGapsWithinABatch(t *testing.T) {
	s := open(t, t.TempDir(), 64<<10)
	store(t, s, entries(5, 9, 1, 10))
	for _, logs := range [][]*raft.Log{entries(9, 10, 1, 10), entries(4, 4, 1, 10), {entry(10, 1, 10), entry(12, 1, 10)}} {
		if err := s.StoreLogs(logs); err == nil || !strings.Contains(err.Error(), "does not follow") {
			t.Fatalf("StoreLogs(%d...) err = %v", logs[0].Index, err)
		}
	}
	check(t, s, 5, 9, term1, 10)
}

// Raft appends past the end only once a snapshot covers the gap. It
// normally empties a monotonic log first, but a crash before or part-way
// through that delete leaves old entries behind; the append must still
// succeed, or the node could never take another entry.
func TestAppendPastTheEndReplacesTheLog(t *testing.T) {
	for _, tc := range []struct {
		name string
		// crashedDelete leaves only the oldest segment, as a crash part-way
		// through DeleteRange(first, last) can (it removes newest first).
		crashedDelete bool
	}{
		{name: "whole log left"},
		{name: "delete-all cut short", crashedDelete: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, 4096)
			store(t, s, entries(1, 100, 1, 100))
			if tc.crashedDelete {
				s.Close()
				for _, f := range segFiles(t, dir)[1:] {
					if err := os.Remove(f); err != nil {
						t.Fatal(err)
					}
				}
				s = open(t, dir, 4096)
				check(t, s, 1, 29, term1, 100)
			}
			store(t, s, entries(501, 510, 2, 100))
			term2 := func(uint64) uint64 { return 2 }
			check(t, s, 501, 510, term2, 100)
			check(t, reopen(t, s), 501, 510, term2, 100)
			if files := segFiles(t, dir); len(files) != 1 {
				t.Fatalf("segments left: %v", files)
			}
		})
	}
}

func TestDeleteRange(t *testing.T) {
	term := func(cut uint64) func(uint64) uint64 {
		return func(i uint64) uint64 {
			if i >= cut {
				return 2
			}
			return 1
		}
	}
	for _, tc := range []struct {
		name        string
		lo, hi      uint64
		then        []*raft.Log
		first, last uint64
		// reopened first may be lower: a prefix delete frees whole segments only
		reopenFirst uint64
		term        func(uint64) uint64
	}{
		{name: "prefix", lo: 1, hi: 40, first: 41, last: 100, reopenFirst: 30, term: term1},
		{name: "prefix below first", lo: 0, hi: 3, first: 4, last: 100, reopenFirst: 1, term: term1},
		{name: "suffix then new term", lo: 60, hi: 100, then: entries(60, 70, 2, 100), first: 1, last: 70, reopenFirst: 1, term: term(60)},
		// One entry of the same size rewritten: the stale entry after it
		// must not rejoin the log on reopen.
		{name: "suffix rewritten same size", lo: 50, hi: 100, then: entries(50, 50, 2, 100), first: 1, last: 50, reopenFirst: 1, term: term(50)},
		{name: "suffix at a segment start", lo: 30, hi: 100, then: entries(30, 31, 2, 100), first: 1, last: 31, reopenFirst: 1, term: term(30)},
		{name: "everything then elsewhere", lo: 1, hi: 100, then: entries(500, 510, 2, 100), first: 500, last: 510, reopenFirst: 500, term: func(uint64) uint64 { return 2 }},
		{name: "beyond the log", lo: 200, hi: 300, first: 1, last: 100, reopenFirst: 1, term: term1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// 4 KiB segments of 137-byte records: 29 entries each.
			s := open(t, t.TempDir(), 4096)
			store(t, s, entries(1, 100, 1, 100))
			if err := s.DeleteRange(tc.lo, tc.hi); err != nil {
				t.Fatal(err)
			}
			if tc.then != nil {
				store(t, s, tc.then)
			}
			check(t, s, tc.first, tc.last, tc.term, 100)
			check(t, reopen(t, s), tc.reopenFirst, tc.last, tc.term, 100)
		})
	}
}

func TestDeleteFromTheMiddleIsRefused(t *testing.T) {
	s := open(t, t.TempDir(), 64<<10)
	store(t, s, entries(1, 10, 1, 10))
	if err := s.DeleteRange(3, 5); err == nil || !strings.Contains(err.Error(), "middle") {
		t.Fatalf("err = %v", err)
	}
	check(t, s, 1, 10, term1, 10)
}

// After a failed write the store refuses everything, reads included, until
// it is reopened: what reached the disk is only known by reading it back.
func TestAFailedWriteStopsTheStore(t *testing.T) {
	s := open(t, t.TempDir(), 4096)
	store(t, s, entries(1, 10, 1, 100))
	s.tail().f.Close() // the next write fails as a dying disk's would
	err := s.StoreLogs(entries(11, 12, 1, 100))
	if err == nil {
		t.Fatal("StoreLogs on a closed file succeeded")
	}
	var l raft.Log
	for name, got := range map[string]error{
		"StoreLogs":   s.StoreLogs(entries(11, 11, 1, 100)),
		"GetLog":      s.GetLog(5, &l),
		"DeleteRange": s.DeleteRange(8, 10),
		"LastIndex":   func() error { _, err := s.LastIndex(); return err }(),
	} {
		if !errors.Is(got, err) {
			t.Errorf("%s after the failure: err = %v, want %v", name, got, err)
		}
	}
	check(t, reopen(t, s), 1, 10, term1, 100)
}

// Readers racing appends, compactions and truncations see each entry
// whole or not at all (run with -race for the locking).
func TestReadsDuringWrites(t *testing.T) {
	s := open(t, t.TempDir(), crashSegSize)
	done := make(chan struct{})
	errs := make(chan error, 4)
	for r := range 4 {
		go func() {
			var err error
			defer func() { errs <- err }()
			for n := uint64(r); ; n++ {
				select {
				case <-done:
					return
				default:
				}
				first, _ := s.FirstIndex()
				last, _ := s.LastIndex()
				if last == 0 {
					continue
				}
				i := first + n%(last-first+1)
				var got raft.Log
				if err = s.GetLog(i, &got); errors.Is(err, raft.ErrLogNotFound) {
					err = nil // deleted since FirstIndex or LastIndex
					continue
				}
				if err != nil {
					return
				}
				if !sameEntry(&got, crashEntry(i, got.Term)) {
					err = fmt.Errorf("entry %d (term %d) read back wrong", i, got.Term)
					return
				}
			}
		}()
	}
	next, term := uint64(1), uint64(1)
	for op := range 1500 {
		switch {
		case op%50 == 49:
			first, _ := s.FirstIndex()
			if err := s.DeleteRange(first, next-100); err != nil {
				t.Fatal(err)
			}
		case op%20 == 19:
			if err := s.DeleteRange(next-10, next-1); err != nil {
				t.Fatal(err)
			}
			next, term = next-10, term+1
		}
		var logs []*raft.Log
		for range 8 {
			logs = append(logs, crashEntry(next, term))
			next++
		}
		store(t, s, logs)
	}
	close(done)
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestTornTailIsCutAndZeroed(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 64<<10)
	store(t, s, entries(1, 10, 1, 100))
	rec := int64(headerSize + fixedBody + 100)
	s.Close()
	// Entry 8's body is half written; 9 and 10 look whole but follow it.
	f, err := os.OpenFile(segFiles(t, dir)[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("torn"), 7*rec+headerSize+40); err != nil {
		t.Fatal(err)
	}
	f.Close()

	s = open(t, dir, 64<<10)
	check(t, s, 1, 7, term1, 100)
	data, err := os.ReadFile(segFiles(t, dir)[0])
	if err != nil {
		t.Fatal(err)
	}
	if bytes.ContainsFunc(data[7*rec:], func(r rune) bool { return r != 0 }) {
		t.Fatal("bytes after the last good entry were not zeroed")
	}
	store(t, s, entries(8, 8, 2, 100))
	check(t, reopen(t, s), 1, 8, func(i uint64) uint64 { return map[bool]uint64{true: 2, false: 1}[i == 8] }, 100)
}

func TestOpenDropsAnEmptyLastSegmentAndSpares(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 4096)
	store(t, s, entries(1, 10, 1, 100))
	s.Close()
	for _, name := range []string{fmt.Sprintf("%020d%s", 11, segSuffix), "99-1" + spareSuffix} {
		if err := os.WriteFile(filepath.Join(dir, name), make([]byte, 4096), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s = open(t, dir, 4096)
	check(t, s, 1, 10, term1, 100)
	if n := len(segFiles(t, dir)); n != 1 {
		t.Fatalf("%d segment files left, want 1", n)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*"+spareSuffix)); len(m) != 0 {
		t.Fatalf("stale spare left: %v", m)
	}
}

// closedLog writes entries 1-100 into 4 KiB segments (29 each), closes
// the store and lists its segment files.
func closedLog(t *testing.T) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	s := open(t, dir, 4096)
	store(t, s, entries(1, 100, 1, 100))
	s.Close()
	return dir, segFiles(t, dir)
}

// A first segment with no readable entry while later ones exist is
// damage, not a crash artefact: refusing it must leave it in place, or a
// second Open would serve a log that silently starts later.
func TestOpenKeepsAnEmptySegmentItRefuses(t *testing.T) {
	dir, files := closedLog(t)
	f, err := os.OpenFile(files[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("x"), headerSize+3); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for range 2 {
		if _, err := Open(dir, 4096); err == nil || !strings.Contains(err.Error(), "holds no entries but later ones exist") {
			t.Fatalf("err = %v", err)
		}
	}
	if got := segFiles(t, dir); len(got) != len(files) {
		t.Fatalf("%d segments left, want %d", len(got), len(files))
	}
}

func TestOpenRefusesAHoleBetweenSegments(t *testing.T) {
	dir, files := closedLog(t)
	if len(files) < 3 {
		t.Fatalf("only %d segments", len(files))
	}
	if err := os.Remove(files[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, 4096); err == nil || !strings.Contains(err.Error(), "starts at index 59 but the one before ends at 29") {
		t.Fatalf("err = %v", err)
	}
}

func BenchmarkStoreLogs(b *testing.B) {
	for _, n := range []int{1, 16} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			s, err := Open(b.TempDir(), 0)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			idx := uint64(1)
			for b.Loop() {
				store := entries(idx, idx+uint64(n)-1, 1, 200)
				if err := s.StoreLogs(store); err != nil {
					b.Fatal(err)
				}
				idx += uint64(n)
			}
		})
	}
}

// BenchmarkOpen reopens a default-size segment holding a few entries, as a
// box does at every start.
func BenchmarkOpen(b *testing.B) {
	dir := b.TempDir()
	s, err := Open(dir, 0)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.StoreLogs(entries(1, 20, 1, 200)); err != nil {
		b.Fatal(err)
	}
	s.Close()
	b.ReportAllocs()
	for b.Loop() {
		s, err := Open(dir, 0)
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}
