// Package amtsimtest runs the project's device simulator (tests/amtsim) for
// tests of packages that drive a device: built from source once per test
// binary, started as its own process, its addresses read from what it
// prints. It shares no code with amtsim itself.
package amtsimtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	once   sync.Once
	bin    string
	binErr error
)

// Binary builds amtsim (once) and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		dir, err := os.MkdirTemp("", "amtsim-bin")
		if err != nil {
			binErr = err
			return
		}
		bin = filepath.Join(dir, "amtsim")
		out, err := exec.Command("go", "build", "-o", bin, "github.com/branchbox/branchbox/tests/amtsim/cmd/amtsim").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("building amtsim: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return bin
}

// Sim is one running `amtsim serve`.
type Sim struct {
	// Remote is the TLS (16993) address; Local the host-side (LMS)
	// WS-Man URL when --local-listen was given; Status the status URL
	// when --status-listen was given.
	Remote, Local, Status string
}

var (
	remoteLine = regexp.MustCompile(`listening on (\S+)`)
	localLine  = regexp.MustCompile(`local WS-Man on (http://\S+/wsman)`)
	statusLine = regexp.MustCompile(`status on (http://\S+/)`)
)

// Serve runs `amtsim serve ARGS` until the test ends and waits until it
// listens. Give addresses with port 0; the ones bound are read back.
func Serve(t testing.TB, args ...string) *Sim {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, Binary(t), append([]string{"serve"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("amtsim serve %v stderr:\n%s", args, stderr.String())
		}
	})
	ready := make(chan *Sim, 1)
	go func() {
		s := &Sim{}
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			if m := localLine.FindStringSubmatch(line); m != nil {
				s.Local = m[1]
			}
			if m := statusLine.FindStringSubmatch(line); m != nil {
				s.Status = m[1]
			}
			if m := remoteLine.FindStringSubmatch(line); m != nil && !signalled {
				s.Remote = m[1]
				signalled = true
				ready <- s
			}
		}
		if !signalled {
			ready <- nil
		}
	}()
	select {
	case s := <-ready:
		if s == nil {
			t.Fatalf("amtsim exited: %s", stderr.String())
		}
		return s
	case <-time.After(30 * time.Second):
		t.Fatal("amtsim did not start")
	}
	return nil
}

// Status is the part of amtsim's device status tests look at.
type Status struct {
	UUID        string `json:"uuid"`
	AMTVersion  string `json:"amt_version"`
	State       string `json:"state"`
	ControlMode string `json:"control_mode"`
	LastError   string `json:"last_error"`
	Features    struct {
		UserConsent string `json:"user_consent"`
		KVM         bool   `json:"kvm"`
		SOL         bool   `json:"sol"`
	} `json:"features"`
}

// DeviceStatus reads the device's status (Serve needs --status-listen).
func (s *Sim) DeviceStatus(t testing.TB) Status {
	t.Helper()
	if s.Status == "" {
		t.Fatal("amtsim was started without --status-listen")
	}
	resp, err := http.Get(s.Status)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ds []Status
	if err := json.NewDecoder(resp.Body).Decode(&ds); err != nil || len(ds) != 1 {
		t.Fatalf("amtsim status: %v (%d devices)", err, len(ds))
	}
	return ds[0]
}
