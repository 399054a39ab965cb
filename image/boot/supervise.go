package boot

import (
	"context"
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
	// Started is called after each start with the run number (1, 2, ...)
	// and a context cancelled when that run ends.
	Started func(ctx context.Context, run int)
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
		began := time.Now()
		if err := cmd.Start(); err != nil {
			s.Log.Error("cannot start branchbox", "cmd", cmd.Path, "err", err)
		} else {
			runCtx, done := context.WithCancel(ctx)
			if s.Started != nil {
				go s.Started(runCtx, run)
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
