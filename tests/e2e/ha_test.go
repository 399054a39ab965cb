package e2e

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"github.com/branchbox/branchbox/provisioner/democa"
)

// The HA lab: a pair (a, b) and a witness (w) on one bridged LAN with
// the DHCP clients and an AMT device, each in its own namespace.
//
//	a 10.71.0.2 ─┐
//	b 10.71.0.3 ─┤
//	w 10.71.0.4 ─┼─ br0 (lan ns)
//	cli (load)  ─┤
//	dev (amtsim)─┘
const haSite = `sites:
  - name: hq
    domain: hq.ha.example
    interface: eth1
    subnet: 10.71.0.0/16
    range: [10.71.1.0, 10.71.60.255]
    router: 10.71.0.1
    lease_time: 1h
    provisioning_cert: {chain: %[1]s/chain.pem, key: %[1]s/key.pem}
    profile: ha
    naming_template: amt-{uuid8}
    allow_template: true
profiles:
  - name: ha
    admin_password_file: %[2]s
`

type haMember struct {
	id, ip, cfg string
	role        string
	ns          *NS
	proc        *Proc
	logs        []string // output of earlier runs
}

type haLab struct {
	t        *testing.T
	bin, sim string
	dir      string
	lan      *NS
	members  map[string]*haMember
	rootHash string
}

func (l *haLab) member(id string) *haMember { return l.members[id] }

func (m *haMember) start(t *testing.T, bin string) {
	t.Helper()
	if m.proc != nil {
		m.logs = append(m.logs, m.proc.Output())
	}
	m.proc = m.ns.Start(bin, "serve", "--config", m.cfg)
	m.proc.WaitOutput(t, "branchbox ready", 90*time.Second)
}

// haMemberView is an entry of GET /api/v1/cluster.
type haMemberView struct {
	ID           string `json:"id"`
	Role         string `json:"role"`
	Kind         string `json:"kind"`
	Voter        bool   `json:"voter"`
	Leader       bool   `json:"leader"`
	AppliedIndex uint64 `json:"applied_index"`
}

func (l *haLab) ctl(m *haMember, v any, args ...string) error {
	out, err := m.ns.Run(l.bin, append([]string{"ctl", "--config", m.cfg, "--output", "json"}, args...)...)
	if err != nil {
		return err
	}
	if v != nil {
		if err := json.Unmarshal([]byte(out), v); err != nil {
			return fmt.Errorf("ctl %v: %v: %s", args, err, out)
		}
	}
	return nil
}

func (l *haLab) cluster(m *haMember) map[string]haMemberView {
	var ms []haMemberView
	if err := l.ctl(m, &ms, "cluster", "status"); err != nil {
		return nil
	}
	out := map[string]haMemberView{}
	for _, v := range ms {
		out[v.ID] = v
	}
	return out
}

// leader is the data member that leads, as the live members see it.
func (l *haLab) leader(except string) *haMember {
	for _, id := range []string{"a", "b", "w"} {
		if id == except {
			continue
		}
		for lid, v := range l.cluster(l.members[id]) {
			if v.Leader && lid != "w" {
				return l.members[lid]
			}
		}
	}
	return nil
}

func (l *haLab) waitCluster(via *haMember, what string, timeout time.Duration, ok func(map[string]haMemberView) bool) map[string]haMemberView {
	l.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c := l.cluster(via)
		if ok(c) {
			return c
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("%s: cluster as %s sees it: %+v", what, via.id, c)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func newHALab(t *testing.T) *haLab {
	t.Helper()
	RequireRoot(t)
	RequireTools(t, map[string]string{"ip": "iproute2", "udhcpc": "udhcpc", "dig": "bind9-dnsutils", "openssl": "openssl"})
	l := &haLab{t: t, dir: t.TempDir(), members: map[string]*haMember{}}
	l.bin, l.sim = provisionBinaries(t)
	l.lan = NewNS(t, "halan")
	l.lan.MustRun("ip", "link", "add", "br0", "type", "bridge")
	l.lan.MustRun("ip", "link", "set", "br0", "up")

	chain, err := democa.Generate(democa.Options{Domain: "hq.ha.example"})
	if err != nil {
		t.Fatal(err)
	}
	certDir := filepath.Join(l.dir, "cert")
	if _, err := chain.WriteFiles(certDir); err != nil {
		t.Fatal(err)
	}
	l.rootHash = chain.RootSHA256()
	pass := filepath.Join(l.dir, "admin.pass")
	writeFile(t, pass, labAdminPassword+"\n", 0o600)
	site := fmt.Sprintf(haSite, certDir, pass)

	for i, id := range []string{"a", "b", "w"} {
		m := &haMember{id: id, ip: fmt.Sprintf("10.71.0.%d", i+2), role: "voter", ns: NewNS(t, "ha"+id)}
		l.attach(m.ns, "eth1", m.ip+"/16", "p"+id)
		var y strings.Builder
		fmt.Fprintf(&y, "node:\n  id: %s\n  data_dir: %s/%s\n  api: 127.0.0.1:18443\n  cluster:\n    raft: %s:7000\n", id, l.dir, id, m.ip)
		if id == "w" {
			m.role = "witness"
			y.WriteString("    role: witness\n")
		}
		if id != "a" {
			fmt.Fprintf(&y, "    join: [10.71.0.2:7000]\n    join_token_file: %s/token\n", l.dir)
		}
		if id != "w" {
			y.WriteString("dns:\n  listen: \":53\"\nprovisioner:\n  listen: \":9971\"\n")
			y.WriteString(site)
		}
		m.cfg = filepath.Join(l.dir, id+".yaml")
		writeFile(t, m.cfg, y.String(), 0o644)
		l.members[id] = m
	}
	t.Cleanup(func() {
		if !t.Failed() && os.Getenv("BRANCHBOX_HA_LOGS") == "" {
			return
		}
		// Whole logs go to out/ (raft's retries flood the tail).
		os.MkdirAll("out", 0o755)
		for _, id := range []string{"a", "b", "w"} {
			m := l.members[id]
			if m.proc == nil {
				continue
			}
			all := strings.Join(append(m.logs, m.proc.Output()), "\n--- restart ---\n")
			os.WriteFile(filepath.Join("out", "ha-"+id+".log"), []byte(all), 0o644)
			var mine []string
			for _, line := range strings.Split(all, "\n") {
				if !strings.Contains(line, "raft: ") {
					mine = append(mine, line)
				}
			}
			t.Logf("%s log without raft's lines (whole: out/ha-%s.log):\n%s", id, id, tail(strings.Join(mine, "\n"), 30))
		}
	})
	return l
}

// attach links ns to the LAN bridge through a veth named ifc.
func (l *haLab) attach(ns *NS, ifc, cidr, bridgePort string) {
	Link(l.t, ns, ifc, cidr, l.lan, bridgePort, "")
	l.lan.MustRun("ip", "link", "set", bridgePort, "master", "br0")
}

// TestHAPairAndWitness forms a pair + witness of real processes and keeps
// DHCP clients busy through kill -9 of the leader and a partition of the
// leader, checking that a new leader answers, no acknowledged lease is
// lost, no address is held twice, and an OTP used during the failover is
// consumed once. BRANCHBOX_FAILOVER_RUNS sets the number of kills (for
// make bench); BRANCHBOX_FAILOVER_OUT receives their times as JSON.
func TestHAPairAndWitness(t *testing.T) {
	l := newHALab(t)
	a, b, w := l.member("a"), l.member("b"), l.member("w")

	a.start(t, l.bin)
	tok := strings.TrimSpace(a.ns.MustRun(l.bin, "ctl", "--config", a.cfg, "cluster", "token"))
	writeFile(t, filepath.Join(l.dir, "token"), tok+"\n", 0o600)

	// A box joining with a wrong token is refused and says why.
	bad := &haMember{id: "x", ip: "10.71.0.9", ns: NewNS(t, "hax")}
	l.attach(bad.ns, "eth1", bad.ip+"/16", "px")
	parts := strings.Split(tok, ".")
	writeFile(t, filepath.Join(l.dir, "badtoken"), parts[0]+".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA."+parts[2]+"\n", 0o600)
	bad.cfg = filepath.Join(l.dir, "x.yaml")
	writeFile(t, bad.cfg, fmt.Sprintf("node:\n  id: x\n  data_dir: %s/x\n  api: 127.0.0.1:18443\n  cluster:\n    raft: 10.71.0.9:7000\n    join: [10.71.0.2:7000]\n    join_token_file: %s/badtoken\n", l.dir, l.dir), 0o644)
	if out, err := bad.ns.Run(l.bin, "serve", "--config", bad.cfg); err == nil || !strings.Contains(out, "join token is not valid") {
		t.Fatalf("joining with a wrong token: %v\n%s", err, tail(out, 10))
	}
	// Without a certificate the cluster port serves nothing; with one from
	// another CA the handshake fails.
	if out, _ := bad.ns.Run("sh", "-c", `printf 'C{"op":"info"}\n' | timeout 5 openssl s_client -quiet -connect 10.71.0.2:7000 2>&1`); strings.Contains(out, "applied_index") {
		t.Fatalf("the cluster port answered a client without a certificate:\n%s", out)
	}
	bad.ns.MustRun("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=a/OU=voter",
		"-keyout", filepath.Join(l.dir, "x.key"), "-out", filepath.Join(l.dir, "x.pem"), "-days", "1")
	if out, _ := bad.ns.Run("sh", "-c", fmt.Sprintf(`printf 'C{"op":"info"}\n' | timeout 5 openssl s_client -quiet -cert %s/x.pem -key %s/x.key -connect 10.71.0.2:7000 2>&1`, l.dir, l.dir)); strings.Contains(out, "applied_index") {
		t.Fatalf("the cluster port answered a certificate from another CA:\n%s", out)
	}

	// The witness first, then the second box: never two voters alone.
	w.start(t, l.bin)
	b.start(t, l.bin)
	l.waitCluster(a, "pair + witness formed", 30*time.Second, func(c map[string]haMemberView) bool {
		return c["a"].Kind == "voter" && c["b"].Kind == "voter" && c["w"].Kind == "witness" && c["a"].Leader
	})
	if st := w.ns.MustRun(l.bin, "ctl", "--config", w.cfg, "status"); !strings.Contains(st, "not run on a witness") {
		t.Errorf("witness status does not say it runs no services:\n%s", st)
	}

	// The AMT device gets its lease and finds the provisioners now; its
	// hello goes out during the first failover.
	dev := l.prepareOTPDevice()
	if got := dev.provisionServers; len(got) != 2 || got[0] != a.ip || got[1] != b.ip {
		t.Errorf("ProvisionServer.hq.ha.example = %v, want the leader then the other box [%s %s]", got, a.ip, b.ip)
	}

	load := startDHCPLoad(t, l, 8)
	defer load.stop()
	load.waitAcks(t, 50, 30*time.Second)

	runs := 2
	if n, err := strconv.Atoi(os.Getenv("BRANCHBOX_FAILOVER_RUNS")); err == nil && n > 0 {
		runs = n
	}
	var failovers []time.Duration
	for i := range runs {
		leader := l.leader("")
		if leader == nil {
			t.Fatal("no leader")
		}
		other := a
		if leader == a {
			other = b
		}
		leader.proc.Kill()
		killed := time.Now()
		if i == 0 {
			dev.sendHello(t, other.ip)
		}
		ack := load.firstAckAfter(t, killed, other.ip, 30*time.Second)
		failovers = append(failovers, ack.Sub(killed))
		t.Logf("kill -9 %s: first ACK from %s after %v", leader.id, other.id, ack.Sub(killed).Round(time.Millisecond))
		if i == 0 {
			l.checkProvisionServers(dev, []string{other.ip})
			// The session runs on the survivor; let it finish before the
			// next kill may take that member down too.
			dev.check(t, l, other)
		}
		leader.start(t, l.bin)
		l.waitCluster(other, leader.id+" back as a follower", 60*time.Second, func(c map[string]haMemberView) bool {
			return c[leader.id].Role == "follower" && c[leader.id].Voter && c[leader.id].AppliedIndex > 0 &&
				c[leader.id].AppliedIndex+50 >= c[other.id].AppliedIndex
		})
	}
	if out := os.Getenv("BRANCHBOX_FAILOVER_OUT"); out != "" {
		ms := make([]float64, len(failovers))
		for i, d := range failovers {
			ms[i] = float64(d.Microseconds()) / 1000
		}
		b, _ := json.Marshal(map[string]any{"kill9_ms": ms})
		writeFile(t, out, string(b)+"\n", 0o644)
	}

	// Partition the leader away: its LAN link goes down.
	l.partition(t, load, "link down",
		func(m *haMember) { m.ns.MustRun("ip", "link", "set", "eth1", "down") },
		func(m *haMember) { m.ns.MustRun("ip", "link", "set", "eth1", "up") })
	// Cut only its raft traffic: it still hears the DHCP clients, and must
	// stop answering them once it has no quorum (a minority never commits,
	// so it can never acknowledge; it steps down and sends nothing).
	var cutAt time.Time
	l.partition(t, load, "raft cut, LAN kept",
		func(m *haMember) {
			for _, peer := range l.members {
				if peer != m {
					m.ns.MustRun("ip", "route", "add", "blackhole", peer.ip+"/32")
				}
			}
			cutAt = time.Now()
		},
		func(m *haMember) {
			for _, a := range load.snapshot() {
				if a.server == m.ip && a.at.After(cutAt.Add(500*time.Millisecond)) {
					t.Errorf("%s, cut off from the others, acknowledged %s to %s at +%v", m.id, a.ip, a.mac, a.at.Sub(cutAt).Round(time.Millisecond))
				}
			}
			for _, peer := range l.members {
				if peer != m {
					m.ns.MustRun("ip", "route", "del", "blackhole", peer.ip+"/32")
				}
			}
		})

	acks := load.stop()
	l.checkLeases(t, acks)

	// Membership changes: removing a voter from three is refused (two
	// voters stop on either's loss) unless forced; the witness leaves.
	if out, err := w.ns.Run(l.bin, "ctl", "--config", w.cfg, "cluster", "remove", "b"); err == nil || !strings.Contains(out, "exactly two") {
		t.Errorf("removing b from three voters: %v\n%s", err, out)
	}
	w.ns.MustRun(l.bin, "ctl", "--config", w.cfg, "cluster", "leave", "--force")
	l.waitCluster(a, "the witness gone", 10*time.Second, func(c map[string]haMemberView) bool {
		_, still := c["w"]
		return !still && len(c) == 2
	})
	sort.Slice(failovers, func(i, j int) bool { return failovers[i] < failovers[j] })
	t.Logf("failover over %d kills: min %v, max %v; %d leases acknowledged", len(failovers), failovers[0].Round(time.Millisecond), failovers[len(failovers)-1].Round(time.Millisecond), len(acks))
}

// partition cuts the leader off with cut, checks the other box takes
// over and the old leader steps down, then heals and waits for it to
// catch up.
func (l *haLab) partition(t *testing.T, load *dhcpLoad, how string, cut, heal func(*haMember)) {
	t.Helper()
	leader := l.leader("")
	if leader == nil {
		t.Fatal("no leader")
	}
	other := l.member("a")
	if leader == other {
		other = l.member("b")
	}
	cut(leader)
	at := time.Now()
	ack := load.firstAckAfter(t, at, other.ip, 30*time.Second)
	t.Logf("partition of %s (%s): first ACK from %s after %v", leader.id, how, other.id, ack.Sub(at).Round(time.Millisecond))
	var st struct{ Role string }
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := l.ctl(leader, &st, "status"); err == nil && st.Role != "leader" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the partitioned leader %s still says it leads: %+v", leader.id, st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Let the majority commit more while it is away.
	time.Sleep(2 * time.Second)
	heal(leader)
	l.waitCluster(other, leader.id+" rejoined after the partition", 60*time.Second, func(c map[string]haMemberView) bool {
		return c[leader.id].Role == "follower" && c[leader.id].AppliedIndex+50 >= c[other.id].AppliedIndex
	})
}

// checkLeases: every acknowledged lease is in the leader's table with the
// client it was acknowledged to, and no address went to two clients.
func (l *haLab) checkLeases(t *testing.T, acks []dhcpAck) {
	t.Helper()
	leader := l.leader("")
	var leases []struct{ IP, MAC string }
	if err := l.ctl(leader, &leases, "leases"); err != nil {
		t.Fatal(err)
	}
	table := map[string]string{}
	for _, le := range leases {
		table[le.IP] = le.MAC
	}
	holder := map[string]string{}
	lost := 0
	for _, a := range acks {
		if prev, ok := holder[a.ip]; ok && prev != a.mac {
			t.Errorf("%s acknowledged to both %s and %s", a.ip, prev, a.mac)
		}
		holder[a.ip] = a.mac
		if table[a.ip] != a.mac {
			lost++
			if lost < 5 {
				t.Errorf("acknowledged lease %s → %s (from %s at %s) is not in the table (has %q)", a.ip, a.mac, a.server, a.at.Format(time.StampMilli), table[a.ip])
			}
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d acknowledged leases lost", lost, len(acks))
	}
}

// dhcpAck is one acknowledged lease as a client saw it.
type dhcpAck struct {
	mac, ip, server string
	at              time.Time
}

// dhcpLoad is a crowd of DHCP clients doing DORA over and over, each
// exchange with a new MAC, retransmitting every 300 ms like an impatient
// client, so a failover shows as a gap between two ACKs.
type dhcpLoad struct {
	conn net.PacketConn
	done chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	waiting map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4
	acks    []dhcpAck
	stopped bool
}

// startDHCPLoad runs the crowd from its own namespace on the LAN.
func startDHCPLoad(t *testing.T, l *haLab, workers int) *dhcpLoad {
	t.Helper()
	cli := NewNS(t, "hacli")
	l.attach(cli, "eth0", "10.71.250.250/16", "pcli")
	d := &dhcpLoad{done: make(chan struct{}), waiting: map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4{}}
	if err := cli.Do(func() (err error) {
		d.conn, err = server4.NewIPv4UDPConn("eth0", &net.UDPAddr{Port: dhcpv4.ClientPort})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	go d.read()
	var seq struct {
		sync.Mutex
		n int
	}
	for range workers {
		d.wg.Go(func() {
			for {
				select {
				case <-d.done:
					return
				default:
				}
				seq.Lock()
				seq.n++
				n := seq.n
				seq.Unlock()
				d.dora(net.HardwareAddr{0x02, 0x71, 0, byte(n >> 16), byte(n >> 8), byte(n)})
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	return d
}

func (d *dhcpLoad) read() {
	buf := make([]byte, 1500)
	for {
		k, _, err := d.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := dhcpv4.FromBytes(buf[:k])
		if err != nil || m.OpCode != dhcpv4.OpcodeBootReply {
			continue
		}
		d.mu.Lock()
		ch := d.waiting[m.TransactionID]
		d.mu.Unlock()
		if ch != nil {
			select {
			case ch <- m:
			default:
			}
		}
	}
}

// exchange sends req every 300 ms until a reply of a wanted type, for up
// to wait.
func (d *dhcpLoad) exchange(req *dhcpv4.DHCPv4, wait time.Duration, want ...dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	ch := make(chan *dhcpv4.DHCPv4, 8)
	d.mu.Lock()
	d.waiting[req.TransactionID] = ch
	d.mu.Unlock()
	defer func() { d.mu.Lock(); delete(d.waiting, req.TransactionID); d.mu.Unlock() }()
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		if _, err := d.conn.WriteTo(req.ToBytes(), bcast); err != nil {
			return nil
		}
		timer := time.After(300 * time.Millisecond)
	recv:
		for {
			select {
			case m := <-ch:
				if slices.Contains(want, m.MessageType()) {
					return m
				}
			case <-timer:
				break recv
			case <-d.done:
				return nil
			}
		}
	}
	return nil
}

func (d *dhcpLoad) dora(mac net.HardwareAddr) {
	for {
		var xid dhcpv4.TransactionID
		rand.Read(xid[:])
		disc, _ := dhcpv4.NewDiscovery(mac, dhcpv4.WithTransactionID(xid), dhcpv4.WithBroadcast(true))
		offer := d.exchange(disc, 60*time.Second, dhcpv4.MessageTypeOffer)
		if offer == nil {
			return
		}
		req, _ := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithBroadcast(true))
		// The server that offered may die before it acknowledges: after
		// 3 s a client starts over with a new DISCOVER.
		ack := d.exchange(req, 3*time.Second, dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak)
		if ack == nil || ack.MessageType() == dhcpv4.MessageTypeNak {
			select {
			case <-d.done:
				return
			default:
				continue
			}
		}
		d.mu.Lock()
		if !d.stopped {
			d.acks = append(d.acks, dhcpAck{mac: mac.String(), ip: ack.YourIPAddr.String(), server: ack.ServerIdentifier().String(), at: time.Now()})
		}
		d.mu.Unlock()
		return
	}
}

func (d *dhcpLoad) snapshot() []dhcpAck {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.acks)
}

func (d *dhcpLoad) waitAcks(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for len(d.snapshot()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d DHCP ACKs in %v", len(d.snapshot()), timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// firstAckAfter waits for the first ACK from server after t0.
func (d *dhcpLoad) firstAckAfter(t *testing.T, t0 time.Time, server string, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, a := range d.snapshot() {
			if a.server == server && a.at.After(t0) {
				return a.at
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no DHCP ACK from %s within %v of the fault", server, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *dhcpLoad) stop() []dhcpAck {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return nil
	}
	d.stopped = true
	close(d.done)
	d.mu.Unlock()
	d.conn.Close()
	d.wg.Wait()
	return d.snapshot()
}

// haOTPDevice is an agent-initiated AMT device: registered with a
// one-time password, which its agent set in the firmware.
type haOTPDevice struct {
	ns                *NS
	uuid, otp, ip     string
	domain            string
	provisionServers  []string
	dnsServer         string
	proc              *Proc
	registeredThrough *haMember
	rootHash          string
}

func (l *haLab) prepareOTPDevice() *haOTPDevice {
	t := l.t
	t.Helper()
	d := &haOTPDevice{ns: NewNS(t, "hadev"), uuid: randomUUIDString(t), rootHash: l.rootHash}
	l.attach(d.ns, "eth0", "", "pdev")
	// Registered through the follower: the write is forwarded.
	var reg struct{ UUID, OTP string }
	d.registeredThrough = l.member("b")
	if err := l.ctl(d.registeredThrough, &reg, "devices", "register", d.uuid, "--site", "hq"); err != nil || len(reg.OTP) < 8 {
		t.Fatalf("register through the follower: %v %+v", err, reg)
	}
	d.otp = reg.OTP
	dir := filepath.Join(l.dir, "dev")
	os.MkdirAll(dir, 0o755)
	log := filepath.Join(dir, "udhcpc.log")
	writeFile(t, filepath.Join(dir, "udhcpc.sh"), fmt.Sprintf("#!/bin/sh\n[ \"$1\" = bound ] && ip addr add \"$ip/$mask\" dev \"$interface\"\necho \"$1 ip=$ip dns=$dns domain=$domain serverid=$serverid\" >> %s\n", log), 0o755)
	d.ns.MustRun("udhcpc", "-f", "-q", "-n", "-i", "eth0", "-t", "10", "-T", "1", "-s", filepath.Join(dir, "udhcpc.sh"))
	lease := waitLine(t, log, "bound ")
	if lease["domain"] != "hq.ha.example" {
		t.Fatalf("option 15 from the pair: %q, want hq.ha.example", lease["domain"])
	}
	d.ip, d.domain, d.dnsServer = lease["ip"], lease["domain"], lease["dns"]
	l.checkProvisionServers(d, nil)
	d.proc = d.ns.Start(l.sim, "serve", "--listen", d.ip+":16993", "--domain", d.domain, "--uuid", d.uuid, "--custom-root-hash", l.rootHash, "--otp", d.otp)
	d.proc.WaitOutput(t, "listening on", 20*time.Second)
	return d
}

// checkProvisionServers resolves ProvisionServer.<domain> against the
// device's DNS server until it is want (any answer when want is nil).
func (l *haLab) checkProvisionServers(d *haOTPDevice, want []string) {
	l.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var got []string
		for _, s := range l.members {
			if s.role == "witness" {
				continue
			}
			out, err := d.ns.Run("dig", "+short", "+time=1", "+tries=1", "@"+s.ip, "ProvisionServer."+d.domain, "A")
			if err == nil && strings.TrimSpace(out) != "" && !strings.Contains(out, "timed out") {
				got = strings.Fields(out)
				break
			}
		}
		d.provisionServers = got
		if (want == nil && len(got) > 0) || (want != nil && slices.Equal(got, want)) {
			return
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("ProvisionServer.%s = %v, want %v", d.domain, got, want)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (d *haOTPDevice) sendHello(t *testing.T, server string) {
	t.Helper()
	if err := SendHello(d.ns, d.ip, net.JoinHostPort(server, "9971"), d.uuid, d.rootHash); err != nil {
		t.Fatalf("hello to %s: %v", server, err)
	}
}

// check: the device whose hello arrived during the failover is
// activated, its password consumed exactly once and never printed.
func (d *haOTPDevice) check(t *testing.T, l *haLab, via *haMember) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var dev deviceDetail
	for {
		if err := l.ctl(via, &dev, "devices", "show", d.uuid); err == nil && (dev.State == "activated" || dev.State == "failed") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("OTP device after the failover: %+v\n%s", dev, tail(d.proc.Output(), 20))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if dev.State != "activated" {
		t.Fatalf("OTP device hello'd during the failover: %s (%s)\n%s", dev.State, dev.LastError, tail(d.proc.Output(), 20))
	}
	var audit []auditEntry
	if err := l.ctl(via, &audit, "audit", "--limit", "10000"); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range audit {
		if e.Subject == d.uuid && e.Action == "activation.otp" && strings.Contains(e.Detail, "consumed") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the OTP was consumed %d times, want exactly once", n)
	}
	for id, m := range l.members {
		for _, out := range append(m.logs, m.proc.Output()) {
			if strings.Contains(out, d.otp) {
				t.Errorf("member %s printed the one-time password", id)
			}
		}
	}
}
