package e2e

import (
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
)

// The branch network of TestDHCP:
//
//	client ns (eth0) ── lan1 ── appliance ns ── uplink ── relay ns ── lan2side ── client2 ns (eth0)
//	   10.61.0.0/16      .0.2               10.63.0.2    10.63.0.1   10.62.0.1      10.62.0.0/24
const dhcpConfig = `node:
  id: e2e
  data_dir: %[1]s/data
  api: 127.0.0.1:18443
dns:
  listen: 127.0.0.1:15353
provisioner:
  listen: 127.0.0.1:19971
dhcp:
  relay_listen: "0.0.0.0:67"
sites:
  - name: lan1
    domain: lan1.e2e.example
    interface: lan1
    subnet: 10.61.0.0/16
    range: [10.61.1.0, 10.61.2.255]
    router: 10.61.0.1
    lease_time: 2m
  - name: lan2
    domain: lan2.e2e.example
    relay: true
    subnet: 10.62.0.0/24
    range: [10.62.0.100, 10.62.0.150]
    router: 10.62.0.1
    lease_time: 2m
    reservations:
      - {mac: "02:e2:e2:00:00:99", ip: 10.62.0.42, hostname: fixed}
`

const udhcpcScript = `#!/bin/sh
case "$1" in
bound|renew)
  ip addr flush dev "$interface"
  ip addr add "$ip/$mask" dev "$interface"
  [ -n "$router" ] && ip route replace default via "$router" dev "$interface"
  ;;
esac
echo "$1 ip=$ip mask=$subnet router=$router dns=$dns domain=$domain search=$search serverid=$serverid" >> %s
`

const dhclientScript = `#!/bin/sh
echo "$reason ip=$new_ip_address mask=$new_subnet_mask router=$new_routers dns=$new_domain_name_servers domain=$new_domain_name search=$new_domain_search" >> %s
exit 0
`

// TestDHCP runs bin/branchbox serve in a namespace and gets leases from it
// with udhcpc and dhclient, directly and through ISC's dhcrelay, across a
// kill -9, and for 200 simulated clients at once.
func TestDHCP(t *testing.T) {
	RequireRoot(t)
	RequireTools(t, map[string]string{"udhcpc": "udhcpc", "dhclient": "isc-dhcp-client", "dhcrelay": "isc-dhcp-relay"})
	bin := branchboxBinary(t)
	dir := t.TempDir()

	app, cli, rel, cli2 := NewNS(t, "app"), NewNS(t, "cli"), NewNS(t, "rel"), NewNS(t, "cli2")
	Link(t, app, "lan1", "10.61.0.2/16", cli, "eth0", "")
	Link(t, app, "uplink", "10.63.0.2/24", rel, "up0", "10.63.0.1/24")
	Link(t, rel, "dn0", "10.62.0.1/24", cli2, "eth0", "")
	app.MustRun("ip", "route", "add", "10.62.0.0/24", "via", "10.63.0.1")
	rel.MustRun("sysctl", "-qw", "net.ipv4.ip_forward=1")
	cli2.MustRun("ip", "link", "set", "eth0", "address", "02:e2:e2:00:00:01")

	cfg := filepath.Join(dir, "branchbox.yaml")
	writeFile(t, cfg, fmt.Sprintf(dhcpConfig, dir), 0o644)
	serve := func() *Proc {
		p := app.Start(bin, "serve", "--config", cfg)
		p.WaitOutput(t, "site=lan1", 60*time.Second)
		p.WaitOutput(t, "site=lan2", 10*time.Second)
		return p
	}
	box := serve()
	rel.Start("dhcrelay", "-4", "-d", "-pf", filepath.Join(dir, "dhcrelay.pid"), "-iu", "up0", "-id", "dn0", "10.63.0.2")

	// udhcpc on the directly attached LAN, kept running to renew later.
	udhcpcLog := filepath.Join(dir, "udhcpc.log")
	udhcpc := cli.Start("udhcpc", "-f", "-i", "eth0", "-O", "search", "-t", "10", "-T", "1", "-s", script(t, dir, "udhcpc.sh", udhcpcScript, udhcpcLog))
	bound := waitLine(t, udhcpcLog, "bound ")
	checkLease(t, "udhcpc", bound, "10.61.1.0", "10.61.2.255", map[string]string{
		"mask": "255.255.0.0", "router": "10.61.0.1", "dns": "10.61.0.2", "domain": "lan1.e2e.example", "serverid": "10.61.0.2",
	})
	acked := []string{bound["ip"]}

	// dhclient on the same LAN (it sends no client identifier, so it is a
	// second client with its own lease).
	dhclientLog := filepath.Join(dir, "dhclient.log")
	writeFile(t, filepath.Join(dir, "dhclient.conf"), "request subnet-mask, routers, domain-name, domain-name-servers, domain-search;\n", 0o644)
	dhclient := cli.Start("dhclient", "-4", "-d", "-1", "-cf", filepath.Join(dir, "dhclient.conf"), "-lf", filepath.Join(dir, "dhclient.leases"),
		"-pf", filepath.Join(dir, "dhclient.pid"), "-sf", script(t, dir, "dhclient.sh", dhclientScript, dhclientLog), "eth0")
	got := waitLine(t, dhclientLog, "BOUND ")
	dhclient.Kill()
	checkLease(t, "dhclient", got, "10.61.1.0", "10.61.2.255", map[string]string{
		"mask": "255.255.0.0", "router": "10.61.0.1", "dns": "10.61.0.2", "domain": "lan1.e2e.example", "search": "lan1.e2e.example.", // dhclient prints the FQDN form
	})
	if got["ip"] == bound["ip"] {
		t.Fatalf("udhcpc and dhclient both hold %s", got["ip"])
	}
	acked = append(acked, got["ip"])

	// The relayed LAN: its own scope and domain, chosen by giaddr.
	relayLog := filepath.Join(dir, "relay.log")
	relayScript := script(t, dir, "relay.sh", udhcpcScript, relayLog)
	cli2.MustRun("udhcpc", "-f", "-q", "-n", "-i", "eth0", "-t", "10", "-T", "1", "-s", relayScript)
	checkLease(t, "relayed udhcpc", waitLine(t, relayLog, "bound "), "10.62.0.100", "10.62.0.150", map[string]string{
		"mask": "255.255.255.0", "router": "10.62.0.1", "dns": "10.63.0.2", "domain": "lan2.e2e.example", "serverid": "10.63.0.2",
	})

	// A reservation on the relayed LAN.
	cli2.MustRun("ip", "link", "set", "eth0", "address", "02:e2:e2:00:00:99")
	os.Remove(relayLog)
	cli2.MustRun("udhcpc", "-f", "-q", "-n", "-i", "eth0", "-t", "10", "-T", "1", "-s", relayScript)
	if ip := waitLine(t, relayLog, "bound ")["ip"]; ip != "10.62.0.42" {
		t.Fatalf("reserved client got %s, want 10.62.0.42", ip)
	}

	// kill -9 and restart: the committed leases survive and a renewing
	// client keeps its address.
	box.Kill()
	box = serve()
	udhcpc.Signal(syscall.SIGUSR1)
	renew := waitLine(t, udhcpcLog, "renew ")
	if renew["ip"] != bound["ip"] {
		t.Fatalf("after a restart the renewal got %s, had %s", renew["ip"], bound["ip"])
	}
	udhcpc.Kill()

	// 200 simulated clients at once: every one gets an address, none the
	// same, none one acknowledged before the restart.
	cli.MustRun("ip", "addr", "flush", "dev", "eth0")
	cli.MustRun("ip", "addr", "add", "10.61.250.250/16", "dev", "eth0")
	var leases map[string]string
	if err := cli.Do(func() (err error) {
		leases, err = simulateClients(200, "eth0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	owner := map[string]string{}
	for _, ip := range acked {
		owner[ip] = "an earlier client"
	}
	for mac, ip := range leases {
		if other, dup := owner[ip]; dup {
			t.Fatalf("%s and %s both got %s", other, mac, ip)
		}
		owner[ip] = mac
		checkInRange(t, mac, ip, "10.61.1.0", "10.61.2.255")
	}
	if len(leases) != 200 {
		t.Fatalf("%d of 200 simulated clients got a lease", len(leases))
	}
	box.Kill()
}

// branchboxBinary is $BRANCHBOX_BIN, or a fresh build of the appliance.
func branchboxBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("BRANCHBOX_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "branchbox")
	cmd := exec.Command("go", "build", "-o", bin, "./appliance/cmd/branchbox")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building branchbox: %v\n%s", err, out)
	}
	return bin
}

func writeFile(t *testing.T, path, body string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
}

func script(t *testing.T, dir, name, body, log string) string {
	path := filepath.Join(dir, name)
	writeFile(t, path, fmt.Sprintf(body, log), 0o755)
	return path
}

// waitLine waits for a line starting with prefix in a client's script log
// and returns its key=value fields.
func waitLine(t *testing.T, path, prefix string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(path)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, prefix) {
				fields := map[string]string{}
				for _, f := range strings.Fields(line)[1:] {
					k, v, _ := strings.Cut(f, "=")
					fields[k] = v
				}
				return fields
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := os.ReadFile(path)
	t.Fatalf("no %q line in %s:\n%s", prefix, path, b)
	return nil
}

func checkLease(t *testing.T, who string, got map[string]string, first, last string, want map[string]string) {
	t.Helper()
	checkInRange(t, who, got["ip"], first, last)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s = %q, want %q (all: %v)", who, k, got[k], v, got)
		}
	}
}

func checkInRange(t *testing.T, who, ip, first, last string) {
	t.Helper()
	a, err := netip.ParseAddr(ip)
	if err != nil || a.Less(netip.MustParseAddr(first)) || netip.MustParseAddr(last).Less(a) {
		t.Fatalf("%s: address %q is not in %s-%s", who, ip, first, last)
	}
}

// simulateClients runs n DHCP clients at once over one broadcast socket
// on ifname and returns MAC → acknowledged address.
func simulateClients(n int, ifname string) (map[string]string, error) {
	conn, err := server4.NewIPv4UDPConn(ifname, &net.UDPAddr{Port: dhcpv4.ClientPort})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var mu sync.Mutex
	waiting := map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4{}
	go func() {
		buf := make([]byte, 1500)
		for {
			k, _, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			m, err := dhcpv4.FromBytes(buf[:k])
			if err != nil || m.OpCode != dhcpv4.OpcodeBootReply {
				continue
			}
			mu.Lock()
			ch := waiting[m.TransactionID]
			mu.Unlock()
			if ch != nil {
				select {
				case ch <- m:
				default:
				}
			}
		}
	}()
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}
	// exchange sends req until a reply of the wanted type arrives.
	exchange := func(req *dhcpv4.DHCPv4, want dhcpv4.MessageType) (*dhcpv4.DHCPv4, error) {
		ch := make(chan *dhcpv4.DHCPv4, 4)
		mu.Lock()
		waiting[req.TransactionID] = ch
		mu.Unlock()
		defer func() { mu.Lock(); delete(waiting, req.TransactionID); mu.Unlock() }()
		for range 4 {
			if _, err := conn.WriteTo(req.ToBytes(), bcast); err != nil {
				return nil, err
			}
			select {
			case m := <-ch:
				if m.MessageType() == want {
					return m, nil
				}
				return nil, fmt.Errorf("got %s, want %s", m.MessageType(), want)
			case <-time.After(2 * time.Second):
			}
		}
		return nil, fmt.Errorf("no %s after 4 tries", want)
	}
	results := make(map[string]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			mac := net.HardwareAddr{0x02, 0x5e, 0, 0, byte(i >> 8), byte(i)}
			var xid dhcpv4.TransactionID
			rand.Read(xid[:])
			disc, _ := dhcpv4.NewDiscovery(mac, dhcpv4.WithTransactionID(xid), dhcpv4.WithBroadcast(true))
			offer, err := exchange(disc, dhcpv4.MessageTypeOffer)
			if err != nil {
				errs <- fmt.Errorf("client %s: %w", mac, err)
				return
			}
			req, _ := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithBroadcast(true))
			ack, err := exchange(req, dhcpv4.MessageTypeAck)
			if err != nil {
				errs <- fmt.Errorf("client %s: %w", mac, err)
				return
			}
			mu.Lock()
			results[mac.String()] = ack.YourIPAddr.String()
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return results, err
	}
	return results, nil
}
