// Package e2e holds end-to-end tests that run real binaries and real
// clients in network namespaces the tests create and remove themselves.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// RequireRoot skips a test that needs network namespaces when not root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
}

// RequireTools fails the test, naming the Debian package, when a program
// it drives is missing.
func RequireTools(t testing.TB, programToPackage map[string]string) {
	t.Helper()
	for prog, pkg := range programToPackage {
		if _, err := exec.LookPath(prog); err != nil {
			t.Fatalf("%s not found: install the Debian package %s", prog, pkg)
		}
	}
}

// NS is a network namespace owned by one test. Cleanup kills whatever the
// test started in it and deletes it.
type NS struct {
	Name string
	t    testing.TB

	mu    sync.Mutex
	procs []*Proc
}

var nsSeq atomic.Int64

// NewNS creates a namespace named bb-<role>-<pid>-<n> with loopback up.
func NewNS(t testing.TB, role string) *NS {
	t.Helper()
	n := &NS{Name: fmt.Sprintf("bb-%s-%d-%d", role, os.Getpid(), nsSeq.Add(1)), t: t}
	// A namespace left behind by a crashed earlier run of this PID.
	exec.Command("ip", "netns", "del", n.Name).Run()
	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", n.Name, err, out)
	}
	t.Cleanup(n.destroy)
	n.MustRun("ip", "link", "set", "lo", "up")
	return n
}

func (n *NS) destroy() {
	n.mu.Lock()
	procs := n.procs
	n.mu.Unlock()
	for _, p := range procs {
		p.Kill()
	}
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		n.t.Errorf("ip netns del %s: %v: %s", n.Name, err, out)
	}
}

// Command is an exec.Cmd that runs inside the namespace.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command in the namespace and returns its combined output.
func (n *NS) Run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := n.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), n.Name, err, out)
	}
	return string(out), nil
}

// MustRun is Run that fails the test on error.
func (n *NS) MustRun(name string, args ...string) string {
	n.t.Helper()
	out, err := n.Run(name, args...)
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

// Start runs a command in the background; its output is kept for Output
// and it is killed (with its process group) at cleanup if still running.
func (n *NS) Start(name string, args ...string) *Proc {
	n.t.Helper()
	p, _ := n.start(false, name, args...)
	return p
}

// StartWithInput is Start with a pipe to the command's standard input, to
// type on a console it serves.
func (n *NS) StartWithInput(name string, args ...string) (*Proc, io.WriteCloser) {
	n.t.Helper()
	return n.start(true, name, args...)
}

func (n *NS) start(input bool, name string, args ...string) (*Proc, io.WriteCloser) {
	n.t.Helper()
	p := &Proc{cmd: n.Command(context.Background(), name, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	var in io.WriteCloser
	if input {
		var err error
		if in, err = p.cmd.StdinPipe(); err != nil {
			n.t.Fatalf("stdin of %s: %v", name, err)
		}
	}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		n.t.Fatalf("start %s in %s: %v", name, n.Name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	n.mu.Lock()
	n.procs = append(n.procs, p)
	n.mu.Unlock()
	return p, in
}

// Do runs fn on an OS thread switched into the namespace. Sockets fn opens
// stay in the namespace after Do returns, so a test can drive traffic from
// Go code as if it were a host on that network. Only sockets opened on
// this goroutine count: net/http's Client dials on goroutines of its own,
// which may run on threads outside the namespace, so dial inside fn and
// speak HTTP over that connection instead.
func (n *NS) Do(fn func() error) error {
	target, err := os.Open("/var/run/netns/" + n.Name)
	if err != nil {
		return fmt.Errorf("namespace %s: %w", n.Name, err)
	}
	defer target.Close()
	runtime.LockOSThread()
	home, err := os.Open(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer home.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter %s: %w", n.Name, err)
	}
	fnErr := fn()
	if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread is stuck in the wrong namespace: keep it locked so the
		// runtime retires it instead of reusing it.
		return fmt.Errorf("leave %s: %w", n.Name, err)
	}
	runtime.UnlockOSThread()
	return fnErr
}

// GetJSON fetches http://addr/ from inside the namespace and decodes the
// JSON answer into v. The connection is dialled on Do's thread itself:
// net/http's Client would dial from a goroutine of its own, on a thread
// in some other namespace.
func (n *NS) GetJSON(addr string, v any) error {
	return n.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: "+addr+"\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", addr, resp.Status)
		}
		return json.NewDecoder(resp.Body).Decode(v)
	})
}

// Link joins two namespaces with a veth pair named aIf (in a) and bIf (in
// b), each side given its CIDR address when not empty, both up.
func Link(t testing.TB, a *NS, aIf, aAddr string, b *NS, bIf, bAddr string) {
	t.Helper()
	if out, err := exec.Command("ip", "link", "add", aIf, "netns", a.Name, "type", "veth", "peer", "name", bIf, "netns", b.Name).CombinedOutput(); err != nil {
		t.Fatalf("veth %s/%s: %v: %s", aIf, bIf, err, out)
	}
	for _, end := range []struct {
		ns        *NS
		ifc, cidr string
	}{{a, aIf, aAddr}, {b, bIf, bAddr}} {
		if end.cidr != "" {
			end.ns.MustRun("ip", "addr", "add", end.cidr, "dev", end.ifc)
		}
		end.ns.MustRun("ip", "link", "set", end.ifc, "up")
	}
}

// Proc is a background process started in a namespace.
type Proc struct {
	cmd  *exec.Cmd
	out  lockedBuffer
	done chan struct{}
	err  error
}

// Output is everything the process printed so far.
func (p *Proc) Output() string { return p.out.String() }

// Pid is the process's id (ip netns exec execs the command, so it is the
// command's own).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process group.
func (p *Proc) Signal(sig syscall.Signal) error { return syscall.Kill(-p.cmd.Process.Pid, sig) }

// Kill sends SIGKILL to the process group and waits for the exit.
func (p *Proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.Signal(syscall.SIGKILL)
	<-p.done
}

// WaitOutput waits until the output contains s, or fails the test.
func (p *Proc) WaitOutput(t testing.TB, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.Output(), s) {
		select {
		case <-p.done:
			t.Fatalf("process exited (%v) before printing %q; output:\n%s", p.err, s, p.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %q; output:\n%s", s, p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
