package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/miekg/dns"
	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/amt"
	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/amt/general"
	gwsman "github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/wsman"
	"golang.org/x/sys/unix"

	"github.com/branchbox/branchbox/tests/amtsim/certgen"
	"github.com/branchbox/branchbox/tests/amtsim/device"
	"github.com/branchbox/branchbox/tests/amtsim/firmware"
	"github.com/branchbox/branchbox/tests/amtsim/fleet"
	"github.com/branchbox/branchbox/tests/amtsim/hello"
)

const (
	testDomain = "branch.example.com"
	serverIP   = "10.213.0.1"
)

func mustRun(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// inNetns runs fn on a thread switched into the named namespace; sockets fn
// creates stay in that namespace.
func inNetns(name string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + name)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", name, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: it dies with the goroutine instead of
		// running other code in the wrong namespace.
		return fmt.Errorf("restore namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

func nsDial(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNetns(ns, func() (err error) {
			c, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// lan is two namespaces joined by a veth pair: "srv" holds the test's
// DHCP, DNS and hello servers, "dev" holds amtsim.
type lan struct {
	srv, dev, devIf string
}

func newLAN(t *testing.T) *lan {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test creates network namespaces and needs root")
	}
	pid := os.Getpid()
	l := &lan{srv: fmt.Sprintf("amtsrv-%d", pid), dev: fmt.Sprintf("amtdev-%d", pid), devIf: fmt.Sprintf("vd%d", pid)}
	srvIf := fmt.Sprintf("vs%d", pid)
	mustRun(t, "ip", "netns", "add", l.srv)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", l.srv).Run() })
	mustRun(t, "ip", "netns", "add", l.dev)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", l.dev).Run() })
	mustRun(t, "ip", "-n", l.srv, "link", "add", srvIf, "type", "veth", "peer", "name", l.devIf, "netns", l.dev)
	mustRun(t, "ip", "-n", l.srv, "addr", "add", serverIP+"/24", "dev", srvIf)
	mustRun(t, "ip", "-n", l.srv, "link", "set", srvIf, "up")
	mustRun(t, "ip", "-n", l.srv, "link", "set", "lo", "up")
	mustRun(t, "ip", "-n", l.dev, "link", "set", "lo", "up")
	l.startDHCP(t, srvIf)
	l.startDNS(t)
	return l
}

// startDHCP answers DISCOVER/REQUEST with addresses from .100 and the
// options a branch appliance gives (1, 3, 6, 15, 51, 54).
func (l *lan) startDHCP(t *testing.T, iface string) {
	var mu sync.Mutex
	leases := map[string]net.IP{}
	srvIP := net.ParseIP(serverIP).To4()
	handler := func(conn net.PacketConn, _ net.Addr, m *dhcpv4.DHCPv4) {
		var mt dhcpv4.MessageType
		switch m.MessageType() {
		case dhcpv4.MessageTypeDiscover:
			mt = dhcpv4.MessageTypeOffer
		case dhcpv4.MessageTypeRequest:
			mt = dhcpv4.MessageTypeAck
		default:
			return
		}
		mu.Lock()
		ip, ok := leases[m.ClientHWAddr.String()]
		if !ok {
			ip = net.IPv4(10, 213, 0, byte(100+len(leases))).To4()
			leases[m.ClientHWAddr.String()] = ip
		}
		mu.Unlock()
		resp, err := dhcpv4.NewReplyFromRequest(m, dhcpv4.WithMessageType(mt), dhcpv4.WithYourIP(ip),
			dhcpv4.WithServerIP(srvIP), dhcpv4.WithNetmask(net.CIDRMask(24, 32)), dhcpv4.WithRouter(srvIP),
			dhcpv4.WithDNS(srvIP), dhcpv4.WithOption(dhcpv4.OptDomainName(testDomain)), dhcpv4.WithLeaseTime(3600),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(srvIP)))
		if err != nil {
			t.Errorf("dhcp reply: %v", err)
			return
		}
		if _, err := conn.WriteTo(resp.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}); err != nil {
			t.Errorf("dhcp send: %v", err)
		}
	}
	var srv *server4.Server
	if err := inNetns(l.srv, func() (err error) {
		srv, err = server4.NewServer(iface, &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ServerPort}, handler)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { _ = srv.Close() })
}

// startDNS answers ProvisionServer.<domain> (any case) with the server.
func (l *lan) startDNS(t *testing.T) {
	var pc net.PacketConn
	if err := inNetns(l.srv, func() (err error) {
		pc, err = net.ListenPacket("udp", serverIP+":53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		name := q.Question[0].Name
		if strings.EqualFold(name, "provisionserver."+testDomain+".") && q.Question[0].Qtype == dns.TypeA {
			r.Answer = append(r.Answer, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: net.ParseIP(serverIP)})
		} else {
			r.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(r)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
}

type receivedHello struct {
	from   string
	packet hello.Packet
}

// listenHello accepts hellos on 9971 the way a provisioning server must:
// read to EOF, then parse.
func (l *lan) listenHello(t *testing.T) <-chan receivedHello {
	var ln net.Listener
	if err := inNetns(l.srv, func() (err error) {
		ln, err = net.Listen("tcp", serverIP+":9971")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	out := make(chan receivedHello, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			raw, err := io.ReadAll(c)
			c.Close()
			if err != nil {
				t.Errorf("hello read: %v", err)
				continue
			}
			p, err := hello.Parse(raw)
			if err != nil {
				t.Errorf("hello parse: %v", err)
				continue
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			out <- receivedHello{from: host, packet: p}
		}
	}()
	return out
}

// provision runs the bare-metal sequence against one device and reports
// whether the commit was answered.
func provision(t *testing.T, ns, ip string, chain *certgen.Chain) (answered bool) {
	t.Helper()
	cert := chain.TLSCertificate()
	c := gwsman.NewClient("https://"+ip+":16993/wsman", "admin", "", true)
	c.Transport = &http.Transport{DialContext: nsDial(ns), TLSClientConfig: &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}}}
	m := amt.NewMessages()
	resp, err := c.Post(m.GeneralSettings.Get())
	if err != nil {
		t.Fatalf("%s: GeneralSettings: %v", ip, err)
	}
	var gs general.Response
	if err := xml.Unmarshal(resp, &gs); err != nil {
		t.Fatal(err)
	}
	realm := gs.Body.AMTGeneralSettings.DigestRealm
	for _, msg := range []string{
		m.SetupAndConfigurationService.SetMEBXPassword("Mebx-Pass1"),
		m.AuthorizationService.SetAdminACLEntryEx("admin", base64.StdEncoding.EncodeToString(device.HA1("admin", realm, "Adm1n-Pass!"))),
	} {
		if resp, err := c.Post(msg); err != nil || !strings.Contains(string(resp), "<g:ReturnValue>0</g:ReturnValue>") {
			t.Fatalf("%s: %v\n%s", ip, err, resp)
		}
	}
	resp, err = c.Post(m.SetupAndConfigurationService.CommitChanges())
	return err == nil && strings.Contains(string(resp), "<g:ReturnValue>0</g:ReturnValue>")
}

func TestFleetBootsAndProvisions(t *testing.T) {
	l := newLAN(t)
	hellos := l.listenHello(t)
	root, err := certgen.Build(certgen.CA("amtsim Fleet Root"))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := certgen.Extend(root, certgen.Leaf("prov."+testDomain), certgen.CA("Fleet Issuing CA"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 3
	fp := startFleet(t, l, "--count", fmt.Sprint(n),
		"--custom-root-hash", hex.EncodeToString(firmware.Digest(hello.SHA256, root.Certs[0].Raw)),
		"--status-listen", "127.0.0.1:8099", "--hello-schedule", "1x1s,100x3s", "--dhcp-timeout", "2s",
		"--fault", "drop-commit-response@2")

	// Each device must send hello retry 0 and retry 1 on the schedule.
	seen := map[string]map[uint32]bool{} // source IP -> retries
	uuids := map[string]string{}
	deadline := time.After(60 * time.Second)
	for len(seen) < n || !allRetried(seen) {
		select {
		case h := <-hellos:
			if h.packet.Version != hello.VersionPKI || len(h.packet.Hashes) != 24 {
				t.Fatalf("hello from %s: version %d with %d hashes", h.from, h.packet.Version, len(h.packet.Hashes))
			}
			if seen[h.from] == nil {
				seen[h.from] = map[uint32]bool{}
			}
			seen[h.from][h.packet.RetryCount] = true
			uuids[h.from] = h.packet.UUID.String()
		case <-deadline:
			t.Fatalf("hellos seen: %v", seen)
		}
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: nsDial(l.dev)}}
	indexByIP := map[string]int{}
	for _, st := range fetchStatus(t, hc, 8099) {
		indexByIP[st.IP] = st.Index
	}
	for ip := range seen {
		// Device 2 carries the drop-commit-response fault.
		if answered := provision(t, l.srv, ip, chain); answered != (indexByIP[ip] != 2) {
			t.Errorf("%s (device %d): commit answered=%v", ip, indexByIP[ip], answered)
		}
	}

	// Every device is now provisioned, including the one whose commit
	// answer was dropped; new credentials work on a fresh connection.
	for ip := range seen {
		c := gwsman.NewClient("https://"+ip+":16993/wsman", "admin", "Adm1n-Pass!", true)
		c.Transport = &http.Transport{DialContext: nsDial(l.srv), TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
		resp, err := c.Post(amt.NewMessages().SetupAndConfigurationService.Get())
		if err != nil || !strings.Contains(string(resp), "<g:ProvisioningState>2</g:ProvisioningState>") {
			t.Fatalf("%s after provisioning: %v\n%s", ip, err, resp)
		}
		plain := gwsman.NewClient("http://"+ip+":16992/wsman", "admin", "Adm1n-Pass!", true)
		plain.Transport = &http.Transport{DialContext: nsDial(l.srv)}
		if _, err := plain.Post(amt.NewMessages().GeneralSettings.Get()); err != nil {
			t.Fatalf("%s:16992 after provisioning: %v", ip, err)
		}
	}

	links, err := exec.Command("ip", "-n", l.dev, "-br", "link").Output()
	if err != nil || strings.Count(string(links), fmt.Sprintf("as%d-", fp.pid())) != n {
		t.Fatalf("device interfaces: %v\n%s", err, links)
	}
	status := fetchStatus(t, hc, 8099)
	if len(status) != n {
		t.Fatalf("%d devices in status", len(status))
	}
	macs := map[string]bool{}
	for _, s := range status {
		if s.State != "post-provisioning" || s.ControlMode != "acm" || uuids[s.IP] != s.UUID || macs[s.MAC] || s.HellosSent < 2 {
			t.Fatalf("status entry %+v (uuid by hello %q)", s, uuids[s.IP])
		}
		macs[s.MAC] = true
		// The server must have learnt each address with the device's own MAC.
		if neigh, _ := exec.Command("ip", "-n", l.srv, "neigh", "show", s.IP).Output(); !strings.Contains(string(neigh), s.MAC) {
			t.Fatalf("%s resolves to %q, not %s", s.IP, strings.TrimSpace(string(neigh)), s.MAC)
		}
	}
	out := fp.output()
	if strings.Count(out, "event=commit") != n || strings.Count(out, "event=dhcp-bound") != n {
		t.Fatalf("state-change lines:\n%s", out)
	}
}

// fleetProc is a running "amtsim --count N" in the LAN's device namespace.
type fleetProc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
}

func (fp *fleetProc) pid() int { return fp.cmd.Process.Pid }

// output is the state-change lines printed so far.
func (fp *fleetProc) output() string {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return strings.Join(fp.lines, "\n")
}

// startFleet runs amtsim in fleet mode on the LAN's device interface and
// checks on cleanup that it exits cleanly on SIGTERM and removes its links.
func startFleet(t *testing.T, l *lan, args ...string) *fleetProc {
	t.Helper()
	bin := buildBinary(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.dev, bin, "--interface", l.devIf}, args...)...)
	// SIGTERM, so that amtsim removes its interfaces as in real use.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fp := &fleetProc{cmd: cmd}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait() // reports the cancelled context even on a clean exit
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("amtsim exited with %d on SIGTERM", code)
		}
		// "ip netns exec" execs amtsim, so its links are named after this pid.
		links := fmt.Sprintf("as%d-", cmd.Process.Pid)
		if out, _ := exec.Command("ip", "-n", l.dev, "-br", "link").Output(); strings.Contains(string(out), links) {
			t.Errorf("device interfaces left behind:\n%s", out)
		}
		if strings.Contains(stderr.String(), "DATA RACE") {
			t.Error("amtsim reported a data race")
		}
		if t.Failed() {
			t.Logf("amtsim stderr:\n%s", stderr.String())
		}
	})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			fp.mu.Lock()
			fp.lines = append(fp.lines, sc.Text())
			fp.mu.Unlock()
		}
	}()
	return fp
}

func fetchStatus(t *testing.T, hc *http.Client, port int) []fleet.DeviceStatus {
	t.Helper()
	resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var status []fleet.DeviceStatus
	if err := json.NewDecoder(resp.Body).Decode(&status); err != nil {
		t.Fatal(err)
	}
	return status
}

func allRetried(seen map[string]map[uint32]bool) bool {
	for _, r := range seen {
		if !r[0] || !r[1] {
			return false
		}
	}
	return true
}
