// Package fleet runs many simulated devices in one process: each gets a
// macvlan interface (its own MAC) on a parent interface of the current
// network namespace, boots through DHCP, listens on its own 16993 and sends
// its own hellos.
package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/branchbox/branchbox/tests/amtsim/boot"
	"github.com/branchbox/branchbox/tests/amtsim/device"
	"github.com/branchbox/branchbox/tests/amtsim/mei"
	"github.com/branchbox/branchbox/tests/amtsim/wsman"
)

// Config describes a fleet.
type Config struct {
	Count     int
	Interface string // parent interface for the macvlans
	// DeviceConfig returns the configuration of device i (1-based).
	DeviceConfig func(i int) (device.Config, error)
	Schedule     boot.Schedule
	HelloPort    int
	ServerName   string
	DHCPTimeout  time.Duration
	StatusJSON   bool      // state-change lines as JSON instead of text
	Out          io.Writer // state-change lines
	Log          *slog.Logger
	// MeiDir, when set, holds each device's host side: PTHI on <i>.mei and
	// the LMS-like local WS-Man endpoint on <i>.lms (Unix sockets).
	MeiDir string
}

// DeviceStatus is one entry of the status endpoint.
type DeviceStatus struct {
	Index     int    `json:"index"`
	Interface string `json:"interface"`
	MAC       string `json:"mac"`
	IP        string `json:"ip,omitempty"`
	device.Status
	HellosSent int `json:"hellos_sent"`
	// Time is when a state-change line was printed (JSON lines only), so
	// a harness can time each device from its first hello to its commit.
	Time time.Time `json:"time,omitzero"`
}

type member struct {
	index int
	link  string
	dev   *device.Device

	mu     sync.Mutex
	hellos int
}

// Fleet is a running set of devices.
type Fleet struct {
	cfg     Config
	members []*member
	outMu   sync.Mutex
}

// New creates the devices (not yet their interfaces).
func New(cfg Config) (*Fleet, error) {
	if cfg.Count < 1 {
		return nil, errors.New("fleet: count must be at least 1")
	}
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	if cfg.DHCPTimeout == 0 {
		cfg.DHCPTimeout = 5 * time.Second
	}
	f := &Fleet{cfg: cfg}
	for i := 1; i <= cfg.Count; i++ {
		dc, err := cfg.DeviceConfig(i)
		if err != nil {
			return nil, fmt.Errorf("device %d: %w", i, err)
		}
		m := &member{index: i, link: fmt.Sprintf("as%d-%d", os.Getpid(), i)}
		dc.OnChange = func(s device.Status) { f.print(m, s) }
		if m.dev, err = device.New(dc); err != nil {
			return nil, fmt.Errorf("device %d: %w", i, err)
		}
		f.members = append(f.members, m)
	}
	return f, nil
}

func (m *member) status() DeviceStatus {
	m.mu.Lock()
	hellos := m.hellos
	m.mu.Unlock()
	ds := Snapshot(m.index, m.link, m.dev)
	ds.HellosSent = hellos
	return ds
}

// Snapshot is a device's status entry, with the MAC and address its host
// interface reports.
func Snapshot(index int, iface string, dev *device.Device) DeviceStatus {
	mac, ip := dev.Network()
	ds := DeviceStatus{Index: index, Interface: iface, MAC: mac.String(), Status: dev.Status()}
	if ip != nil {
		ds.IP = ip.String()
	}
	return ds
}

// Status returns every device's status.
func (f *Fleet) Status() []DeviceStatus {
	out := make([]DeviceStatus, 0, len(f.members))
	for _, m := range f.members {
		out = append(out, m.status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out
}

// print writes one state-change line.
func (f *Fleet) print(m *member, s device.Status) {
	ds := m.status()
	ds.Status = s
	ds.Time = time.Now().UTC()
	f.outMu.Lock()
	defer f.outMu.Unlock()
	PrintStatus(f.cfg.Out, ds, f.cfg.StatusJSON)
}

// PrintStatus writes a status as a text line or a JSON line.
func PrintStatus(w io.Writer, ds DeviceStatus, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(ds)
		fmt.Fprintln(w, string(b))
		return
	}
	line := fmt.Sprintf("%s device=%d uuid=%s mac=%s ip=%s state=%s control_mode=%s event=%s",
		time.Now().UTC().Format(time.RFC3339), ds.Index, ds.UUID, ds.MAC, ds.IP, ds.State, ds.ControlMode, ds.Event)
	if ds.State == device.PostProvisioning.String() {
		ft := ds.Features
		line += fmt.Sprintf(" sol=%t ider=%t listener=%t kvm=%t user_consent=%s tls=%t", ft.SOL, ft.IDER, ft.RedirectionListener, ft.KVM, ft.UserConsent, ft.TLS.Enabled)
	}
	if ds.LastError != "" {
		line += fmt.Sprintf(" last_error=%q", ds.LastError)
	}
	fmt.Fprintln(w, line)
}

// ServeStatus serves GET / with statuses() as a JSON array until ctx ends.
func ServeStatus(ctx context.Context, ln net.Listener, statuses func() []DeviceStatus) {
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(statuses())
	})}
	stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
	defer stop()
	_ = srv.Serve(ln)
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func sysctl(link, key, value string) error {
	return os.WriteFile(fmt.Sprintf("/proc/sys/net/ipv4/conf/%s/%s", link, key), []byte(value), 0o644)
}

// createLink makes the device's macvlan. ARP and reverse-path settings keep
// many addresses of one subnet in one namespace from answering for each other.
func (f *Fleet) createLink(m *member) error {
	mac, _ := m.dev.Network()
	if err := run("ip", "link", "add", m.link, "link", f.cfg.Interface, "address", mac.String(), "type", "macvlan", "mode", "bridge"); err != nil {
		return err
	}
	for k, v := range map[string]string{"arp_ignore": "1", "arp_announce": "2", "rp_filter": "2"} {
		if err := sysctl(m.link, k, v); err != nil {
			return fmt.Errorf("%s: %w", m.link, err)
		}
	}
	return run("ip", "link", "set", m.link, "up")
}

// Run brings the fleet up and blocks until ctx ends; interfaces are removed
// on return.
func (f *Fleet) Run(ctx context.Context) error {
	if err := run("ip", "link", "set", f.cfg.Interface, "up"); err != nil {
		return err
	}
	// The parent sees every broadcast its macvlans see; it must not answer
	// ARP for their addresses with its own MAC.
	if err := sysctl(f.cfg.Interface, "arp_ignore", "1"); err != nil {
		return fmt.Errorf("%s: %w", f.cfg.Interface, err)
	}
	defer func() {
		for _, m := range f.members {
			_ = run("ip", "link", "del", m.link)
		}
	}()
	for _, m := range f.members {
		if err := f.createLink(m); err != nil {
			return fmt.Errorf("device %d: %w", m.index, err)
		}
	}
	var wg sync.WaitGroup
	if f.cfg.MeiDir != "" {
		for _, m := range f.members {
			if err := f.serveHost(ctx, &wg, m); err != nil {
				return fmt.Errorf("device %d: %w", m.index, err)
			}
		}
	}
	for _, m := range f.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.boot(ctx, m)
		}()
	}
	wg.Wait()
	return nil
}

// serveHost runs the device's host side, which exists whether or not the
// device is on the network: PTHI (as /dev/mei0) and the local WS-Man
// endpoint (as LMS's 16992).
func (f *Fleet) serveHost(ctx context.Context, wg *sync.WaitGroup, m *member) error {
	log := f.cfg.Log.With("device", m.index)
	meiLn, err := mei.ListenUnix(filepath.Join(f.cfg.MeiDir, fmt.Sprintf("%d.mei", m.index)))
	if err != nil {
		return err
	}
	lmsLn, err := mei.ListenUnix(filepath.Join(f.cfg.MeiDir, fmt.Sprintf("%d.lms", m.index)))
	if err != nil {
		_ = meiLn.Close()
		return err
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := mei.Serve(ctx, m.dev, meiLn); err != nil {
			log.Error("MEI server stopped", "err", err.Error())
		}
	}()
	go func() {
		defer wg.Done()
		if err := wsman.ServeLocal(ctx, m.dev, lmsLn); err != nil {
			log.Error("local WS-Man server stopped", "err", err.Error())
		}
	}()
	return nil
}

// boot is one device's life: DHCP until it gets an address, then the
// remote interface and hellos until ctx ends.
func (f *Fleet) boot(ctx context.Context, m *member) {
	log := f.cfg.Log.With("device", m.index, "uuid", m.dev.UUID().String(), "link", m.link)
	var lease boot.Lease
	for {
		var err error
		if lease, err = boot.AcquireLease(ctx, m.link, f.cfg.DHCPTimeout); err == nil {
			break
		}
		m.dev.Note("dhcp: %v", err)
		log.Warn("no DHCP lease yet", "err", err.Error())
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
	if err := boot.ConfigureAddress(m.link, lease); err != nil {
		m.dev.Note("address: %v", err)
		log.Error("cannot configure address", "err", err.Error())
		return
	}
	m.dev.SetDHCPLease(lease.IP, lease.Domain)
	log.Info("DHCP lease", "lease", lease.String())
	f.print(m, withEvent(m.dev.Status(), "dhcp-bound"))

	lc := net.ListenConfig{Control: boot.BindToDevice(m.link)}
	ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort(lease.IP.String(), "16993"))
	if err != nil {
		m.dev.Note("listen 16993: %v", err)
		log.Error("cannot listen on 16993", "err", err.Error())
		return
	}
	go func() {
		if err := wsman.ServeRemote(ctx, m.dev, ln); err != nil {
			log.Error("16993 server stopped", "err", err.Error())
		}
	}()
	httpLn, err := lc.Listen(ctx, "tcp", net.JoinHostPort(lease.IP.String(), "16992"))
	if err != nil {
		m.dev.Note("listen 16992: %v", err)
		log.Error("cannot listen on 16992", "err", err.Error())
		return
	}
	go func() {
		if err := wsman.ServeRemoteHTTP(ctx, m.dev, httpLn); err != nil {
			log.Error("16992 server stopped", "err", err.Error())
		}
	}()
	h := &boot.Hello{
		Device: m.dev, Interface: m.link, LocalIP: lease.IP, DNS: lease.DNS,
		ServerName: f.cfg.ServerName, Port: f.cfg.HelloPort, Schedule: f.cfg.Schedule, Log: log,
		OnSent: func(retry uint32, server string, err error) {
			if err != nil {
				m.dev.Note("hello %d: %v", retry, err)
				return
			}
			m.mu.Lock()
			m.hellos++
			m.mu.Unlock()
			f.print(m, withEvent(m.dev.Status(), "hello"))
		},
	}
	h.Run(ctx)
}

func withEvent(s device.Status, e string) device.Status {
	s.Event = e
	return s
}
