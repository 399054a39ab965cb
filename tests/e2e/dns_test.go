package e2e

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The network of TestDNS:
//
//	cli ns (eth0) ── lan1 ── appliance ns ── lan2 ── cli2 ns (eth0)
//	 10.71.0.0/24    .0.1    upstream on     .0.1    10.72.0.0/24
//	                         127.0.0.1 (test)
const dnsTestConfig = `node:
  id: e2edns
  data_dir: %[1]s/data
  api: 127.0.0.1:18443
dns:
  listen: ":53"
  forward: ["%[2]s"]
provisioner:
  listen: ":9971"
sites:
  - name: branch1
    domain: branch1.example.com
    interface: lan1
    subnet: 10.71.0.0/24
    range: [10.71.0.100, 10.71.0.150]
    router: 10.71.0.1
    lease_time: 2m
  - name: branch2
    domain: branch2.example.com
    interface: lan2
    subnet: 10.72.0.0/24
    range: [10.72.0.100, 10.72.0.150]
    router: 10.72.0.1
    lease_time: 2m
`

// TestDNS runs bin/branchbox serve in a namespace and asks it with dig
// from the site LANs: ProvisionServer per site, a DHCP client's host
// name forward and reverse, and forwarding to an upstream the test runs.
func TestDNS(t *testing.T) {
	RequireRoot(t)
	RequireTools(t, map[string]string{"dig": "bind9-dnsutils", "udhcpc": "udhcpc"})
	bin := branchboxBinary(t)
	dir := t.TempDir()

	app, cli, cli2 := NewNS(t, "dnsapp"), NewNS(t, "dnscli"), NewNS(t, "dnscli2")
	Link(t, app, "lan1", "10.71.0.1/24", cli, "eth0", "")
	Link(t, app, "lan2", "10.72.0.1/24", cli2, "eth0", "10.72.0.50/24")

	var upstreamQueries atomic.Int64
	var upstream string
	if err := app.Do(func() (err error) {
		upstream, err = startUpstream(t, "198.51.100.9", &upstreamQueries)
		return err
	}); err != nil {
		t.Fatal(err)
	}

	cfg := filepath.Join(dir, "branchbox.yaml")
	writeFile(t, cfg, fmt.Sprintf(dnsTestConfig, dir, upstream), 0o644)
	box := app.Start(bin, "serve", "--config", cfg)
	box.WaitOutput(t, "dns serving", 60*time.Second)
	box.WaitOutput(t, "branchbox ready", 30*time.Second)

	// A DHCP client on branch1 that sends a host name.
	udhcpcLog := filepath.Join(dir, "udhcpc.log")
	cli.MustRun("udhcpc", "-f", "-q", "-n", "-i", "eth0", "-t", "10", "-T", "1", "-x", "hostname:nuc-e2e",
		"-s", script(t, dir, "udhcpc.sh", udhcpcScript, udhcpcLog))
	leased := waitLine(t, udhcpcLog, "bound ")["ip"]
	checkInRange(t, "udhcpc", leased, "10.71.0.100", "10.71.0.150")

	tests := []struct {
		from *NS
		args []string
		want string
	}{
		{cli, []string{"@10.71.0.1", "ProvisionServer.branch1.example.com", "A"}, "10.71.0.1"},
		{cli, []string{"@10.71.0.1", "provisionserver.BRANCH1.example.com.", "A"}, "10.71.0.1"},
		{cli2, []string{"@10.72.0.1", "ProvisionServer.branch2.example.com", "A"}, "10.72.0.1"},
		{cli, []string{"@10.71.0.1", "nuc-e2e.branch1.example.com", "A"}, leased},
		{cli, []string{"@10.71.0.1", "-x", leased}, "nuc-e2e.branch1.example.com."},
		{cli2, []string{"@10.72.0.1", "www.outside.test", "A"}, "198.51.100.9"},
	}
	for _, tc := range tests {
		got := digShort(t, tc.from, tc.args...)
		if got != tc.want {
			t.Errorf("dig %s from %s: %q, want %q", strings.Join(tc.args, " "), tc.from.Name, got, tc.want)
		}
	}
	if upstreamQueries.Load() == 0 {
		t.Error("the upstream never saw the forwarded query")
	}

	// A name in a site zone that does not exist: NXDOMAIN with the SOA.
	out := runDig(t, cli, "@10.71.0.1", "nope.branch1.example.com", "A")
	if !strings.Contains(out, "status: NXDOMAIN") || !strings.Contains(out, "IN\tSOA\tprovisionserver.branch1.example.com.") {
		t.Errorf("nope.branch1.example.com:\n%s", out)
	}
	box.Kill()
}

func digShort(t *testing.T, from *NS, args ...string) string {
	t.Helper()
	out := runDig(t, from, append([]string{"+short"}, args...)...)
	return strings.TrimSpace(out)
}

func runDig(t *testing.T, from *NS, args ...string) string {
	t.Helper()
	out, err := from.Run("dig", append([]string{"+time=2", "+tries=2"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// startUpstream serves every A query with answer on a loopback port of
// the calling thread's namespace, counting the queries.
func startUpstream(t *testing.T, answer string, queries *atomic.Int64) (string, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		queries.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		if q := r.Question[0]; q.Qtype == dns.TypeA {
			rr, _ := dns.NewRR(q.Name + " 60 IN A " + answer)
			m.Answer = []dns.RR{rr}
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String(), nil
}
