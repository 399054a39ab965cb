// Package raftlog is a raft.LogStore that appends entries to zero-filled
// segment files and makes each StoreLogs durable with a single fdatasync.
//
// Why not raft-boltdb: a bolt commit is two fdatasyncs (pages, then meta)
// plus page and freelist bookkeeping, and on this kind of appliance that
// was more than half of the CPU a lease commit costs at low load.
// Overwriting bytes already allocated and zeroed needs no filesystem
// metadata change, so its fdatasync flushes data only.
//
// On disk: <dir>/<first index, 20 digits>.seg, each a run of records
//
//	u32 body length | u32 CRC-32C of body | body
//	body: u64 index | u64 term | u8 type | i64 appended-at (ns) | u32 data length | data | extensions
//
// followed by zeros. The log ends at the first record that is zero, torn
// (bad CRC) or out of sequence; whatever follows it in the last segment is
// zeroed on open so that a stale record can never join the log later.
package raftlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/hashicorp/raft"
	"golang.org/x/sys/unix"
)

const (
	headerSize = 8
	fixedBody  = 8 + 8 + 1 + 8 + 4
	// DefaultSegmentSize keeps a segment's zero-fill (done ahead, in the
	// background) short and the space held by compacted entries small.
	DefaultSegmentSize = 16 << 20
	segSuffix          = ".seg"
	spareSuffix        = ".spare"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Store is the log. Its methods are safe for concurrent use.
type Store struct {
	dir     string
	segSize int64

	mu    sync.RWMutex
	segs  []*segment // oldest first; the last one is written to
	first uint64     // 0 when the log is empty
	last  uint64
	// err is the first write or sync failure. After it the store refuses
	// everything: what reached the disk is unknown until the next open
	// re-reads it (a failed fdatasync cannot be retried safely).
	err    error
	spare  *spare
	spareN int
	buf    []byte
}

type segment struct {
	first   uint64 // index of its first entry, also its file name
	f       *os.File
	offsets []int64 // offsets[i] is where entry first+i starts
	end     int64   // where the next record goes
	size    int64
}

func (g *segment) count() uint64 { return uint64(len(g.offsets)) }

// spare is a zero-filled file made ready in the background, so rolling to
// a new segment does not stall a commit behind megabytes of zeros.
type spare struct {
	done chan struct{}
	path string
	f    *os.File
	err  error
}

// Open reads the log in dir, creating dir if needed. segmentSize 0 means
// DefaultSegmentSize.
func Open(dir string, segmentSize int64) (*Store, error) {
	if segmentSize <= 0 {
		segmentSize = DefaultSegmentSize
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("raft log dir: %w", err)
	}
	s := &Store{dir: dir, segSize: segmentSize}
	if err := s.load(); err != nil {
		s.closeFiles()
		return nil, err
	}
	return s, nil
}

func (s *Store) load() error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("raft log dir: %w", err)
	}
	var firsts []uint64
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, spareSuffix):
			// A spare that was being prepared when the process stopped.
			if err := os.Remove(filepath.Join(s.dir, name)); err != nil {
				return fmt.Errorf("raft log: %w", err)
			}
		case strings.HasSuffix(name, segSuffix):
			n, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 10, 64)
			if err != nil {
				return fmt.Errorf("raft log: segment name %q is not an index", name)
			}
			firsts = append(firsts, n)
		}
	}
	slices.Sort(firsts)
	for i, first := range firsts {
		g, err := s.scan(first, i == len(firsts)-1)
		if err != nil {
			return err
		}
		if g.count() == 0 {
			g.f.Close()
			if i != len(firsts)-1 {
				// Damage, not a crash: keep it for whoever investigates.
				return fmt.Errorf("raft log: segment %s holds no entries but later ones exist", filepath.Base(s.path(first)))
			}
			// Rolled to but never written (or its only write was torn).
			if err := os.Remove(s.path(first)); err != nil {
				return fmt.Errorf("raft log: %w", err)
			}
			continue
		}
		if len(s.segs) > 0 && g.first != s.last+1 {
			g.f.Close()
			return fmt.Errorf("raft log: segment %s starts at index %d but the one before ends at %d",
				filepath.Base(s.path(first)), g.first, s.last)
		}
		s.segs = append(s.segs, g)
		if s.first == 0 {
			s.first = g.first
		}
		s.last = g.first + g.count() - 1
	}
	return SyncDir(s.dir)
}

// scan reads one segment's records. In the last segment, anything after
// the final good record is zeroed.
//
// It reads the file through one window of scanWindow bytes rather than
// whole: a box opens its 16 MiB segment at every start, and under
// emulation (the appliance image booted in QEMU TCG) allocating and
// filling 32 MiB of growing buffers, then testing the zeros a byte at a
// time, cost ~60 ms natively and several hundred of a boot.
func (s *Store) scan(first uint64, last bool) (*segment, error) {
	path := s.path(first)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("raft log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("raft log: %w", err)
	}
	g := &segment{first: first, f: f, size: st.Size()}
	w := &window{f: f, size: g.size}
	fail := func(what string, err error) (*segment, error) {
		f.Close()
		return nil, fmt.Errorf("raft log %s: %s%w", filepath.Base(path), what, err)
	}
	var off int64
	for {
		n, ok, err := w.record(off, first+g.count())
		if err != nil {
			return fail("", err)
		}
		if !ok {
			break
		}
		g.offsets = append(g.offsets, off)
		off += n
	}
	g.end = off
	if !last {
		return g, nil
	}
	clean, err := w.zeroFrom(off)
	if err != nil {
		return fail("", err)
	}
	if !clean {
		for z := off; z < g.size; z += int64(len(zeros)) {
			if _, err := f.WriteAt(zeros[:min(int64(len(zeros)), g.size-z)], z); err != nil {
				return fail("zeroing its torn tail: ", err)
			}
		}
		if err := f.Sync(); err != nil {
			return fail("", err)
		}
	}
	return g, nil
}

// scanWindow is how much of a segment one read brings in while scanning.
const scanWindow = 1 << 20

// zeros is what a segment's unused tail holds, compared a chunk at a time.
var zeros [64 << 10]byte

// window is a read-through view of a file of size bytes: the bytes at
// [base, base+len(buf)).
type window struct {
	f    *os.File
	size int64
	base int64
	buf  []byte
}

// at returns the n bytes at off, or nil when the file ends before them.
func (w *window) at(off, n int64) ([]byte, error) {
	if off+n > w.size {
		return nil, nil
	}
	if off < w.base || off+n > w.base+int64(len(w.buf)) {
		want := min(max(n, scanWindow), w.size-off)
		if int64(cap(w.buf)) < want {
			w.buf = make([]byte, want)
		}
		w.buf = w.buf[:want]
		if _, err := w.f.ReadAt(w.buf, off); err != nil {
			w.buf = w.buf[:0]
			return nil, err
		}
		w.base = off
	}
	return w.buf[off-w.base : off-w.base+n], nil
}

// record is recordAt for the record at off in the file.
func (w *window) record(off int64, want uint64) (int64, bool, error) {
	head, err := w.at(off, headerSize+fixedBody)
	if head == nil || err != nil {
		return 0, false, err
	}
	n := int64(binary.LittleEndian.Uint32(head))
	if n < fixedBody {
		return 0, false, nil
	}
	rec, err := w.at(off, headerSize+n)
	if rec == nil || err != nil {
		return 0, false, err
	}
	n, ok := recordAt(rec, 0, want)
	return n, ok, nil
}

// zeroFrom reports whether every byte from off to the end is zero.
func (w *window) zeroFrom(off int64) (bool, error) {
	for off < w.size {
		b, err := w.at(off, min(int64(len(zeros)), w.size-off))
		if err != nil {
			return false, err
		}
		if !bytes.Equal(b, zeros[:len(b)]) {
			return false, nil
		}
		off += int64(len(b))
	}
	return true, nil
}

// recordAt returns the length of the record at off if it is whole, its
// CRC matches and it holds entry want.
func recordAt(data []byte, off int64, want uint64) (int64, bool) {
	if off+headerSize+fixedBody > int64(len(data)) {
		return 0, false
	}
	n := int64(binary.LittleEndian.Uint32(data[off:]))
	if n < fixedBody || off+headerSize+n > int64(len(data)) {
		return 0, false
	}
	body := data[off+headerSize : off+headerSize+n]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(data[off+4:]) {
		return 0, false
	}
	if binary.LittleEndian.Uint64(body) != want {
		return 0, false
	}
	if int64(binary.LittleEndian.Uint32(body[25:]))+fixedBody > n {
		return 0, false
	}
	return headerSize + n, true
}

func (s *Store) path(first uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d%s", first, segSuffix))
}

// FirstIndex implements raft.LogStore.
func (s *Store) FirstIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.first, s.err
}

// LastIndex implements raft.LogStore.
func (s *Store) LastIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.last, s.err
}

// IsMonotonic tells raft to drop the whole log after restoring a snapshot,
// so the log never has a gap and deletes are only ever at its ends.
func (s *Store) IsMonotonic() bool { return true }

// GetLog implements raft.LogStore.
func (s *Store) GetLog(index uint64, l *raft.Log) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.err != nil {
		return s.err
	}
	if s.first == 0 || index < s.first || index > s.last {
		return raft.ErrLogNotFound
	}
	i := sort.Search(len(s.segs), func(i int) bool { return s.segs[i].first > index }) - 1
	g := s.segs[i]
	k := index - g.first
	if k >= g.count() {
		return raft.ErrLogNotFound
	}
	end := g.end
	if k+1 < g.count() {
		end = g.offsets[k+1]
	}
	rec := make([]byte, end-g.offsets[k])
	if _, err := g.f.ReadAt(rec, g.offsets[k]); err != nil {
		return fmt.Errorf("raft log: read entry %d: %w", index, err)
	}
	if _, ok := recordAt(rec, 0, index); !ok {
		return fmt.Errorf("raft log: entry %d in %s is corrupt", index, filepath.Base(s.path(g.first)))
	}
	decode(rec[headerSize:], l)
	return nil
}

func decode(body []byte, l *raft.Log) {
	le := binary.LittleEndian
	l.Index = le.Uint64(body)
	l.Term = le.Uint64(body[8:])
	l.Type = raft.LogType(body[16])
	l.AppendedAt = time.Time{}
	if ns := int64(le.Uint64(body[17:])); ns != 0 {
		l.AppendedAt = time.Unix(0, ns)
	}
	n := le.Uint32(body[25:])
	// body is this call's own buffer, so the slices need no copy.
	l.Data = body[fixedBody : fixedBody+n : fixedBody+n]
	l.Extensions = nil
	if ext := body[fixedBody+n:]; len(ext) > 0 {
		l.Extensions = ext
	}
}

func appendRecord(buf []byte, l *raft.Log) []byte {
	le := binary.LittleEndian
	start := len(buf)
	buf = append(buf, make([]byte, headerSize)...)
	buf = le.AppendUint64(buf, l.Index)
	buf = le.AppendUint64(buf, l.Term)
	buf = append(buf, byte(l.Type))
	var ns int64
	if !l.AppendedAt.IsZero() {
		ns = l.AppendedAt.UnixNano()
	}
	buf = le.AppendUint64(buf, uint64(ns))
	buf = le.AppendUint32(buf, uint32(len(l.Data)))
	buf = append(buf, l.Data...)
	buf = append(buf, l.Extensions...)
	body := buf[start+headerSize:]
	le.PutUint32(buf[start:], uint32(len(body)))
	le.PutUint32(buf[start+4:], crc32.Checksum(body, castagnoli))
	return buf
}

// StoreLog implements raft.LogStore.
func (s *Store) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs appends logs, which must be consecutive, and returns once
// they are durable. Logs that start past the end replace the whole log
// (any index goes when it is empty); an overlap is refused.
//
// Raft appends past the end only when a snapshot covers the gap. It
// empties a monotonic log after installing one, but a crash before or
// part-way through that delete leaves old entries, and refusing the gap
// would then stop this node taking entries for good.
func (s *Store) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	next := s.last + 1
	replace := s.first != 0 && logs[0].Index > next
	if s.first == 0 || replace {
		next = logs[0].Index
	}
	for _, l := range logs {
		if l.Index != next {
			return fmt.Errorf("raft log: entry %d does not follow %d", l.Index, next-1)
		}
		next++
	}
	if replace {
		if err := s.dropSegments(0); err != nil {
			return s.fail(err)
		}
		s.first, s.last = 0, 0
	}
	// Records destined for one segment are written and synced before
	// the next segment is touched, so a crash can tear only the newest
	// segment's tail, never leave a hole before a later segment.
	tail := s.tail()
	s.buf = s.buf[:0]
	var offs []int64
	for _, l := range logs {
		start := len(s.buf)
		s.buf = appendRecord(s.buf, l)
		size := int64(len(s.buf) - start)
		if tail == nil || tail.end+int64(start)+size > tail.size {
			if err := s.flush(tail, s.buf[:start], offs); err != nil {
				return s.fail(err)
			}
			s.buf = append(s.buf[:0], s.buf[start:]...)
			offs = offs[:0]
			var err error
			if tail, err = s.roll(l.Index, size); err != nil {
				return s.fail(err)
			}
			start = 0
		}
		offs = append(offs, tail.end+int64(start))
	}
	if err := s.flush(tail, s.buf, offs); err != nil {
		return s.fail(err)
	}
	if s.first == 0 {
		s.first = logs[0].Index
	}
	s.last = next - 1
	if tail.end > tail.size/2 {
		s.prepareSpare()
	}
	return nil
}

// flush writes records to g at its end and syncs them.
func (s *Store) flush(g *segment, recs []byte, offs []int64) error {
	if g == nil || len(recs) == 0 {
		return nil
	}
	if err := writeSync(g.f, recs, g.end); err != nil {
		return fmt.Errorf("raft log: %w", err)
	}
	g.offsets = append(g.offsets, offs...)
	g.end += int64(len(recs))
	return nil
}

func (s *Store) fail(err error) error {
	s.err = err
	return err
}

func (s *Store) tail() *segment {
	if len(s.segs) == 0 {
		return nil
	}
	return s.segs[len(s.segs)-1]
}

// roll starts a segment whose first entry is index and that holds at
// least need bytes.
func (s *Store) roll(index uint64, need int64) (*segment, error) {
	if t := s.tail(); t != nil && t.count() == 0 {
		// Its only candidate record did not fit: replace it.
		if err := s.dropSegments(len(s.segs) - 1); err != nil {
			return nil, err
		}
	}
	var f *os.File
	var path string
	if need <= s.segSize {
		s.prepareSpare()
		sp := s.spare
		s.spare = nil
		<-sp.done
		if sp.err != nil {
			return nil, sp.err
		}
		f, path = sp.f, sp.path
	} else {
		path = s.sparePath()
		var err error
		if f, err = zeroFile(path, need); err != nil {
			return nil, err
		}
	}
	if err := os.Rename(path, s.path(index)); err != nil {
		f.Close()
		return nil, fmt.Errorf("raft log: %w", err)
	}
	if err := SyncDir(s.dir); err != nil {
		f.Close()
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("raft log: %w", err)
	}
	g := &segment{first: index, f: f, size: st.Size()}
	s.segs = append(s.segs, g)
	return g, nil
}

func (s *Store) prepareSpare() {
	if s.spare != nil {
		return
	}
	sp := &spare{done: make(chan struct{}), path: s.sparePath()}
	s.spare = sp
	size := s.segSize
	go func() {
		defer close(sp.done)
		sp.f, sp.err = zeroFile(sp.path, size)
	}()
}

// sparePath names a new spare file; the caller holds s.mu.
func (s *Store) sparePath() string {
	s.spareN++
	return filepath.Join(s.dir, fmt.Sprintf("%d-%d%s", os.Getpid(), s.spareN, spareSuffix))
}

// zeroFile creates path holding size zero bytes, synced.
func zeroFile(path string, size int64) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("raft log: %w", err)
	}
	zeros := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(zeros)) {
		if _, err := f.WriteAt(zeros[:min(int64(len(zeros)), size-off)], off); err != nil {
			f.Close()
			os.Remove(path)
			return nil, fmt.Errorf("raft log: zero-fill: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("raft log: zero-fill: %w", err)
	}
	return f, nil
}

// DeleteRange implements raft.LogStore for the deletes raft makes of a
// monotonic store: a prefix (compaction), a suffix (a follower's
// conflicting entries) or everything (before a snapshot restore).
func (s *Store) DeleteRange(lo, hi uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if s.first == 0 || hi < s.first || lo > s.last {
		return nil
	}
	lo, hi = max(lo, s.first), min(hi, s.last)
	switch {
	case lo == s.first && hi == s.last:
		if err := s.dropSegments(0); err != nil {
			return s.fail(err)
		}
		s.first, s.last = 0, 0
	case lo == s.first:
		// Whole segments go; entries sharing a segment with kept ones stay
		// on disk and reappear after a restart, which raft allows.
		n := 0
		for n < len(s.segs)-1 && s.segs[n].first+s.segs[n].count()-1 <= hi {
			n++
		}
		for _, g := range s.segs[:n] {
			if err := s.removeSegment(g); err != nil {
				return s.fail(err)
			}
		}
		s.segs = slices.Delete(s.segs, 0, n)
		s.first = hi + 1
	case hi == s.last:
		if err := s.truncate(lo); err != nil {
			return s.fail(err)
		}
		s.last = lo - 1
	default:
		return fmt.Errorf("raft log: deleting %d-%d from the middle of %d-%d is not supported", lo, hi, s.first, s.last)
	}
	return nil
}

// truncate removes entries lo and after. Later segments go first, so a
// crash part-way leaves a log that is merely longer, never one with a hole.
func (s *Store) truncate(lo uint64) error {
	i := sort.Search(len(s.segs), func(i int) bool { return s.segs[i].first > lo }) - 1
	if err := s.dropSegments(i + 1); err != nil {
		return err
	}
	g := s.segs[i]
	k := lo - g.first
	off := g.offsets[k]
	if _, err := g.f.WriteAt(make([]byte, g.end-off), off); err != nil {
		return fmt.Errorf("raft log: truncate: %w", err)
	}
	if err := fdatasync(g.f); err != nil {
		return fmt.Errorf("raft log: truncate: %w", err)
	}
	g.offsets, g.end = g.offsets[:k], off
	return nil
}

// dropSegments removes segs[from:], newest first.
func (s *Store) dropSegments(from int) error {
	for i := len(s.segs) - 1; i >= from; i-- {
		if err := s.removeSegment(s.segs[i]); err != nil {
			return err
		}
		s.segs = s.segs[:i]
	}
	return nil
}

// removeSegment deletes g's file durably before the caller removes the
// next one: the filesystem may persist unsynced unlinks in any order, and
// a crash must leave a run of segments, never one with a hole.
func (s *Store) removeSegment(g *segment) error {
	g.f.Close()
	if err := os.Remove(s.path(g.first)); err != nil {
		return fmt.Errorf("raft log: %w", err)
	}
	return SyncDir(s.dir)
}

// Close releases the files.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sp := s.spare; sp != nil {
		<-sp.done
		if sp.f != nil {
			sp.f.Close()
			os.Remove(sp.path)
		}
		s.spare = nil
	}
	s.closeFiles()
	if s.err == nil {
		s.err = errors.New("raft log: closed")
	}
	return nil
}

func (s *Store) closeFiles() {
	for _, g := range s.segs {
		g.f.Close()
	}
	s.segs = nil
}

// fdatasync flushes the data written; the file's size and blocks never
// change after the zero-fill, so no metadata needs to follow.
func fdatasync(f *os.File) error { return writeSync(f, nil, 0) }

// writeSync writes b at off and fdatasyncs the file, both as raw system
// calls. A Go system call lets the runtime hand this goroutine's P to
// another thread while it waits, and the runtime's monitor thread (sysmon)
// notices a call that lasts longer than 20 µs only by polling: an fsync
// every millisecond kept it polling every 20 µs, and it and the hand-offs
// cost more CPU than the fsync itself (about 70 µs of the 150 µs a write and
// fsync cost here, measured with getrusage). Raw, the thread keeps its P
// through the wait; the goroutines that share it (on a one-CPU box, all of
// them) run once the data is durable, and the DHCP requests that arrive
// meanwhile wait in the socket to join the next commit, which could not
// start before this one ends anyway. The cost: a stop-the-world phase of
// the garbage collector waits for the fsync to end, so with more Ps a GC
// pause can stretch to one fsync (about 0.3 ms here, rarely 10 ms).
func writeSync(f *os.File, b []byte, off int64) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	cerr := raw.Control(func(fd uintptr) {
		for len(b) > 0 {
			n, _, e := unix.RawSyscall6(unix.SYS_PWRITE64, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(off), 0, 0)
			switch {
			case e == unix.EINTR:
				continue
			case e != 0:
				serr = fmt.Errorf("write: %w", e)
				return
			case n == 0:
				serr = fmt.Errorf("write: %w", io.ErrShortWrite)
				return
			}
			b, off = b[n:], off+int64(n)
		}
		for {
			_, _, e := unix.RawSyscall(unix.SYS_FDATASYNC, fd, 0, 0)
			if e != unix.EINTR {
				if e != 0 {
					serr = fmt.Errorf("sync: %w", e)
				}
				return
			}
		}
	})
	if cerr != nil {
		return cerr
	}
	return serr
}

// SyncDir makes the names created, renamed or removed in dir durable; the
// store's owner uses it for the directory the store itself was made in.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("raft log dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("raft log dir: %w", err)
	}
	return nil
}
