package raftlog

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The crash test runs this test binary again as a child that writes to a
// store until the parent SIGKILLs it, then checks what a reopen finds.
// A killed process loses nothing the kernel already has, so this tests
// the order of the store's writes, renames and deletes (and a write cut
// short by the kill), not what a power cut would lose.
const (
	crashChildEnv = "RAFTLOG_CRASH_CHILD" // "<dir> <seed>": run as the child
	crashSegSize  = 64 << 10              // small, so rolls and spares are frequent
	crashKills    = 30
	// crashMaxLog bounds the log so each reopen stays quick: above it the
	// child compacts.
	crashMaxLog = 400
)

// crashEntry is what the child writes at index in term: the parent
// rebuilds it to check every byte read back.
func crashEntry(index, term uint64) *raft.Log {
	r := rand.New(rand.NewPCG(index, term))
	size := 20 + r.IntN(2000)
	if r.IntN(300) == 0 {
		size = crashSegSize + r.IntN(crashSegSize/2) // a segment of its own
	}
	data := make([]byte, size+8)
	for i := 0; i < size; i += 8 {
		binary.LittleEndian.PutUint64(data[i:], r.Uint64())
	}
	l := &raft.Log{
		Index: index, Term: term, Type: raft.LogCommand, Data: data[:size],
		AppendedAt: time.Unix(1700000000, int64(index%1000000)*1000+int64(term%1000)),
	}
	if index%97 == 0 {
		l.Type = raft.LogConfiguration
	}
	if index%5 == 0 {
		l.Extensions = fmt.Appendf(nil, "ext %d/%d", index, term)
	}
	return l
}

func sameEntry(a, b *raft.Log) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type &&
		bytes.Equal(a.Data, b.Data) && bytes.Equal(a.Extensions, b.Extensions) &&
		a.AppendedAt.Equal(b.AppendedAt)
}

// crashChild appends, compacts, truncates and clears until killed. Each
// operation is announced on stdout before it starts and acknowledged
// with "ok" once the store returns; both are single writes to a pipe, so
// the parent sees exactly the lines written before the kill.
func crashChild(arg string) {
	dir, seedText, _ := strings.Cut(arg, " ")
	seed, err := strconv.ParseUint(seedText, 10, 64)
	if err != nil {
		crashDie("seed: %v", err)
	}
	s, err := Open(dir, crashSegSize)
	if err != nil {
		crashDie("open: %v", err)
	}
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	term := uint64(1)
	if last > 0 {
		var l raft.Log
		if err := s.GetLog(last, &l); err != nil {
			crashDie("read the last entry: %v", err)
		}
		term = l.Term
	}
	say := func(format string, args ...any) {
		if _, err := fmt.Fprintf(os.Stdout, format+"\n", args...); err != nil {
			os.Exit(4) // the parent is gone
		}
	}
	must := func(err error) {
		if err != nil {
			crashDie("%v", err)
		}
		say("ok")
	}
	say("ready %d %d", first, last)

	rng := rand.New(rand.NewPCG(seed, 1))
	next := last + 1 // where the next append starts; past last+1 is a jump
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		n := uint64(0)
		if last > 0 {
			n = last - first + 1
		}
		switch r := rng.IntN(100); {
		case n >= 2 && r < 4:
			// A follower's conflicting suffix, rewritten in a new term.
			lo := last - rng.Uint64N(min(n-1, 300))
			say("truncate %d", lo)
			must(s.DeleteRange(lo, last))
			last, next, term = lo-1, lo, term+1
			// Widen the window in which a kill finds the tail gone and
			// nothing rewritten yet.
			time.Sleep(5 * time.Millisecond)
		case n > 0 && r < 5:
			// After a snapshot is installed: the next entry may come anywhere.
			say("clear")
			must(s.DeleteRange(first, last))
			next = max(last, 101) - 100 + rng.Uint64N(300)
			first, last, term = 0, 0, term+1
		case n > 0 && r < 6:
			// Entries after a snapshot, over a log nobody emptied.
			next, term = last+2+rng.Uint64N(100), term+1
		case n > crashMaxLog && r < 30:
			hi := last - 100 - rng.Uint64N(200)
			say("prefix %d", hi)
			must(s.DeleteRange(first, hi))
			first = hi + 1
		default:
			count := 1 + rng.Uint64N(24)
			logs := make([]*raft.Log, count)
			for i := range logs {
				logs[i] = crashEntry(next+uint64(i), term)
			}
			say("append %d %d %d", next, next+count-1, term)
			must(s.StoreLogs(logs))
			if last == 0 || next > last+1 {
				first = next
			}
			last = next + count - 1
			next = last + 1
		}
	}
	crashDie("not killed within 30s")
}

func crashDie(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "crash child: "+format+"\n", args...)
	os.Exit(3)
}

// crashLog is a log the parent expects or found: first..last with each
// entry's term (first and last 0 when empty).
type crashLog struct {
	first, last uint64
	terms       map[uint64]uint64
	// ghosts are entries compacted since the store was last opened; they
	// may come back below first, as whole segments are freed only.
	ghosts map[uint64]uint64
}

func (l crashLog) String() string {
	if l.last == 0 {
		return "empty log"
	}
	return fmt.Sprintf("log %d-%d (last term %d)", l.first, l.last, l.terms[l.last])
}

func (l crashLog) clone() crashLog {
	c := crashLog{first: l.first, last: l.last, terms: map[uint64]uint64{}, ghosts: map[uint64]uint64{}}
	for i, t := range l.terms {
		c.terms[i] = t
	}
	for i, t := range l.ghosts {
		c.ghosts[i] = t
	}
	return c
}

// crashOp is one line the child announced.
type crashOp struct {
	kind           string // append, prefix, truncate or clear
	from, to, term uint64 // append
	at             uint64 // prefix: the last index deleted; truncate: the first
}

func parseCrashOp(line string) (crashOp, error) {
	f := strings.Fields(line)
	var op crashOp
	if len(f) == 0 {
		return op, errors.New("empty line")
	}
	op.kind = f[0]
	var dst []*uint64
	switch op.kind {
	case "append":
		dst = []*uint64{&op.from, &op.to, &op.term}
	case "prefix", "truncate":
		dst = []*uint64{&op.at}
	case "clear":
	default:
		return op, fmt.Errorf("unknown operation %q", line)
	}
	if len(f) != len(dst)+1 {
		return op, fmt.Errorf("malformed %q", line)
	}
	for i, p := range dst {
		v, err := strconv.ParseUint(f[i+1], 10, 64)
		if err != nil {
			return op, fmt.Errorf("malformed %q", line)
		}
		*p = v
	}
	return op, nil
}

// after is the log once op has completed.
func (l crashLog) after(op crashOp) crashLog {
	c := l.clone()
	switch op.kind {
	case "append":
		if c.last == 0 || op.from > c.last+1 {
			c = crashLog{first: op.from, terms: map[uint64]uint64{}, ghosts: map[uint64]uint64{}}
		}
		for i := op.from; i <= op.to; i++ {
			c.terms[i] = op.term
		}
		c.last = op.to
	case "prefix":
		for i := c.first; i <= op.at; i++ {
			c.ghosts[i] = c.terms[i]
			delete(c.terms, i)
		}
		c.first = op.at + 1
	case "truncate":
		for i := op.at; i <= c.last; i++ {
			delete(c.terms, i)
		}
		c.last = op.at - 1
	case "clear":
		c = crashLog{terms: map[uint64]uint64{}, ghosts: map[uint64]uint64{}}
	}
	return c
}

// holds reports whether found is l cut to a last index in [minLast,
// maxLast] (0 allows an empty log), give or take compacted entries that
// came back below l.first.
func (l crashLog) holds(found crashLog, minLast, maxLast uint64) error {
	if found.last == 0 {
		if minLast == 0 {
			return nil
		}
		return fmt.Errorf("found an empty log, want %s", l)
	}
	if found.last < minLast || found.last > maxLast {
		return fmt.Errorf("found %s, want its last index in %d-%d of %s", found, minLast, maxLast, l)
	}
	if found.first > l.first {
		return fmt.Errorf("found %s, but %s was never compacted", found, l)
	}
	for i := found.first; i <= found.last; i++ {
		want, ok := l.terms[i]
		if i < l.first {
			want, ok = l.ghosts[i]
		}
		if !ok {
			return fmt.Errorf("found entry %d (term %d), which %s never had", i, found.terms[i], l)
		}
		if found.terms[i] != want {
			return fmt.Errorf("found entry %d in term %d, want term %d", i, found.terms[i], want)
		}
	}
	return nil
}

// admits reports whether found is what a reopen may see of l after a
// kill during pending (nil when the child was between operations). An
// interrupted operation may have done all, none or, where the store
// works in steps, part of its work.
func (l crashLog) admits(found crashLog, pending *crashOp) error {
	if pending == nil {
		return l.holds(found, l.last, l.last)
	}
	done := l.after(*pending)
	switch op := *pending; {
	case op.kind == "prefix":
		// Cut short, it freed fewer segments: more ghosts, same log.
		return done.holds(found, l.last, l.last)
	case op.kind == "truncate":
		// Later segments go first, then the tail is zeroed.
		return l.holds(found, op.at-1, l.last)
	case op.kind == "append" && (l.last == 0 || op.from == l.last+1):
		// Segment by segment: any prefix of the batch may have landed.
		return done.holds(found, l.last, op.to)
	}
	// A clear, or an append that replaces the log: segments go newest
	// first, so a kill leaves the oldest of them (which holds l.first),
	// or nothing, or the start of the new log.
	if err := done.holds(found, 0, done.last); err == nil {
		return nil
	}
	if err := l.holds(found, l.first, l.last); err != nil {
		return fmt.Errorf("neither the old log nor the new one: %w", err)
	}
	return nil
}

// readCrashLog opens dir as a restarted node would and reads every entry,
// checking each is byte for byte what the child wrote for its term.
func readCrashLog(dir string) (crashLog, error) {
	s, err := Open(dir, crashSegSize)
	if err != nil {
		return crashLog{}, fmt.Errorf("reopen: %w", err)
	}
	defer s.Close()
	l := crashLog{terms: map[uint64]uint64{}, ghosts: map[uint64]uint64{}}
	if l.first, err = s.FirstIndex(); err != nil {
		return l, err
	}
	if l.last, err = s.LastIndex(); err != nil {
		return l, err
	}
	if (l.first == 0) != (l.last == 0) || l.first > l.last {
		return l, fmt.Errorf("first index %d, last %d", l.first, l.last)
	}
	for i := l.first; l.last > 0 && i <= l.last; i++ {
		var got raft.Log
		if err := s.GetLog(i, &got); err != nil {
			return l, fmt.Errorf("entry %d of %d-%d: %w", i, l.first, l.last, err)
		}
		if !sameEntry(&got, crashEntry(i, got.Term)) {
			return l, fmt.Errorf("entry %d (term %d) is not what the child wrote", i, got.Term)
		}
		l.terms[i] = got.Term
	}
	var none raft.Log
	for _, i := range []uint64{l.first - 1, l.last + 1} {
		if err := s.GetLog(i, &none); i > 0 && !errors.Is(err, raft.ErrLogNotFound) {
			return l, fmt.Errorf("entry %d outside %s: err %v, want ErrLogNotFound", i, l, err)
		}
	}
	return l, nil
}

// runCrashChild starts a child on dir, kills it after it has worked for
// the given time (counted from its start when early, else from its
// first line) and returns what it printed.
func runCrashChild(t *testing.T, exe, dir string, seed uint64, wait time.Duration, early bool) []string {
	t.Helper()
	cmd := exec.Command(exe, "-test.run=^TestCrashRecovery$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d", crashChildEnv, dir, seed))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	done := make(chan []string, 1)
	go func() {
		var lines []string
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if lines = append(lines, sc.Text()); len(lines) == 1 {
				close(ready)
			}
		}
		done <- lines
	}()
	var lines []string
	exited := false
	if !early {
		select {
		case <-ready:
		case lines = <-done:
			exited = true
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("child not ready after 15s: %s", stderr.String())
		}
	}
	if !exited {
		time.Sleep(wait)
		cmd.Process.Kill()
		lines = <-done
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !exit.Sys().(syscall.WaitStatus).Signaled() {
		t.Fatalf("child ended by itself (%v): %s", err, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Fatalf("child wrote to stderr: %s", stderr.String())
	}
	return lines
}

// TestCrashRecovery kills a writing process at random moments and checks
// after each kill that the log reopens, is contiguous, holds every
// acknowledged change with the exact bytes written, and nothing else.
func TestCrashRecovery(t *testing.T) {
	if arg := os.Getenv(crashChildEnv); arg != "" {
		crashChild(arg)
		return
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(20261128, 7))
	want := crashLog{terms: map[uint64]uint64{}, ghosts: map[uint64]uint64{}}
	var ops, acked int
	for kill := range crashKills {
		early := kill%7 == 3 // sometimes while it opens the store
		wait := time.Duration(rng.IntN(250)) * time.Millisecond
		if early {
			wait = time.Duration(rng.IntN(40)) * time.Millisecond
		}
		lines := runCrashChild(t, exe, dir, rng.Uint64(), wait, early)

		var pending *crashOp
		for n, line := range lines {
			switch {
			case n == 0:
				var first, last uint64
				if _, err := fmt.Sscanf(line, "ready %d %d", &first, &last); err != nil || first != want.first || last != want.last {
					t.Fatalf("kill %d: child started with %q, want %s", kill, line, want)
				}
			case line == "ok":
				if pending == nil {
					t.Fatalf("kill %d: ok with no operation", kill)
				}
				want, pending = want.after(*pending), nil
				acked++
			default:
				op, err := parseCrashOp(line)
				if err != nil || pending != nil {
					t.Fatalf("kill %d: line %d %q out of place (%v)", kill, n, line, err)
				}
				pending = &op
				ops++
			}
		}
		found, err := readCrashLog(dir)
		if err != nil {
			t.Fatalf("kill %d: %v", kill, err)
		}
		if err := want.admits(found, pending); err != nil {
			t.Fatalf("kill %d (during %+v): %v", kill, pending, err)
		}
		if spares, _ := filepath.Glob(filepath.Join(dir, "*"+spareSuffix)); len(spares) > 0 {
			t.Fatalf("kill %d: spares left after reopening: %v", kill, spares)
		}
		// The reopened log is the truth the next child starts from; all
		// its entries are now visible, so no ghosts remain.
		want = found
	}
	t.Logf("%d kills, %d operations started, %d acknowledged; log now %s", crashKills, ops, acked, want)
}
