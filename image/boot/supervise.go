package boot

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os/exec"
	"time"
)

// Supervisor keeps one program running: an appliance must not stop
// serving, or panic the kernel by letting init exit, because one process
// died.
type Supervisor struct {
	// Command makes the command for each run (an exec.Cmd runs once).
	Command func() *exec.Cmd
	// Started is called after each start with the run number (1, 2, ...),
	// a context cancelled when that run ends and a channel closed once the
	// run has written ReadyLine to its stderr.
	Started func(ctx context.Context, run int, ready <-chan struct{})
	// ReadyLine is what the program writes on stderr once it serves. The
	// banner waits for it before asking the program anything: under TCG
	// the box has one slow CPU, and polling while branchbox starts took it
	// from the start itself.
	// Empty: ready at once.
	ReadyLine string
	// MinBackoff is the pause before a restart; it doubles while runs are
	// shorter than StableAfter, up to MaxBackoff, so a config mistake does
	// not flood the console.
	MinBackoff, MaxBackoff, StableAfter time.Duration
	Log                                 *slog.Logger
}

// Run starts the program and restarts it whenever it exits, until ctx is
// cancelled (which kills the running one).
func (s *Supervisor) Run(ctx context.Context) {
	backoff := s.MinBackoff
	for run := 1; ctx.Err() == nil; run++ {
		cmd := s.Command()
		ready := make(chan struct{})
		if s.ReadyLine == "" {
			close(ready)
		} else {
			cmd.Stderr = &watchWriter{w: cmd.Stderr, marker: []byte(s.ReadyLine), seen: ready}
			// A child the program left behind may hold the pipe open; the
			// supervisor must still notice the exit.
			cmd.WaitDelay = time.Second
		}
		began := time.Now()
		if err := cmd.Start(); err != nil {
			s.Log.Error("cannot start branchbox", "cmd", cmd.Path, "err", err)
		} else {
			runCtx, done := context.WithCancel(ctx)
			if s.Started != nil {
				go s.Started(runCtx, run, ready)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			select {
			case err := <-exited:
				done()
				s.Log.Error("branchbox exited; restarting it", "run", run, "status", exitStatus(err), "ran", time.Since(began).Round(time.Millisecond).String(), "restart_in", backoff.String())
			case <-ctx.Done():
				cmd.Process.Kill()
				<-exited
				done()
				return
			}
		}
		if time.Since(began) >= s.StableAfter {
			backoff = s.MinBackoff
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, s.MaxBackoff)
	}
}

func exitStatus(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

// watchWriter passes writes on to w and closes seen the first time marker
// goes through, even split across writes. exec.Cmd writes to it from one
// goroutine.
type watchWriter struct {
	w      io.Writer
	marker []byte
	seen   chan struct{}
	tail   []byte // the last len(marker)-1 bytes written, while unseen
}

func (ww *watchWriter) Write(p []byte) (int, error) {
	if len(ww.marker) > 0 { // not seen yet
		joined := append(ww.tail, p...)
		if bytes.Contains(joined, ww.marker) {
			close(ww.seen)
			ww.marker, ww.tail = nil, nil
		} else {
			ww.tail = append([]byte{}, joined[len(joined)-min(len(joined), len(ww.marker)-1):]...)
		}
	}
	if ww.w == nil {
		return len(p), nil
	}
	return ww.w.Write(p)
}
