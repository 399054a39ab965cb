package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/branchbox/branchbox/provisioner/democa"
)

// TestBenchActivationsVsMeshCentral is `make bench`'s activation row: the
// same amtsim fleet (BRANCHBOX_BENCH_ACTIVATIONS devices booting at once)
// activated in ACM by branchbox and then by MeshCentral, each on the same
// branch LAN of two namespaces. For MeshCentral, which has no DHCP or DNS,
// dnsmasq gives the leases (option 15) and answers ProvisionServer. Both
// do the same work — ACM activation, admin password, and operational TLS
// (MeshCentral before its CommitChanges, branchbox's profile after) — and
// both are timed by the devices themselves, from each device's first
// hello to the first line showing it activated with TLS on, so neither
// server's own idea of "done" is trusted. BRANCHBOX_BENCH_OUT receives the rows.
// Without BRANCHBOX_BENCH_ACTIVATIONS it is skipped: it is a benchmark.
func TestBenchActivationsVsMeshCentral(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv("BRANCHBOX_BENCH_ACTIVATIONS"))
	if err != nil || n <= 0 {
		t.Skip("benchmark: set BRANCHBOX_BENCH_ACTIVATIONS=N (make bench does)")
	}
	RequireRoot(t)
	RequireTools(t, map[string]string{"dnsmasq": "dnsmasq-base"})
	bin, sim := provisionBinaries(t)
	mc := installMeshCentral(t)
	ca, err := democa.Generate(democa.Options{Domain: "branch1.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := ca.WriteFiles(filepath.Join(dir, "ca")); err != nil {
		t.Fatal(err)
	}
	const adminPass = "Bench-Admin-1!"

	var rows []activationFigures
	// branchbox: its own DHCP, DNS and provisioner on the LAN.
	{
		srv, lan := benchLAN(t, "bb")
		pass := filepath.Join(dir, "admin.pass")
		writeFile(t, pass, adminPass+"\n", 0o600)
		cfg := filepath.Join(dir, "branchbox.yaml")
		writeFile(t, cfg, fmt.Sprintf(`node: {id: bench, data_dir: %[1]s/bbdata, api: "127.0.0.1:18443"}
dns: {listen: ":53"}
provisioner: {listen: ":9971"}
sites:
  - {name: branch1, domain: branch1.example.com, interface: srv0, subnet: 10.78.0.0/16, range: [10.78.1.0, 10.78.3.255],
     lease_time: 1h, provisioning_cert: {chain: %[1]s/ca/chain.pem, key: %[1]s/ca/key.pem}, profile: bench,
     naming_template: "amt-{uuid8}", allow_template: true}
profiles:
  - {name: bench, admin_password_file: %[2]s, tls: true}
`, dir, pass), 0o644)
		box := srv.Start(bin, "serve", "--config", cfg)
		box.WaitOutput(t, "branchbox ready", 60*time.Second)
		rows = append(rows, runBenchFleet(t, "branchbox", lan, sim, n, ca.RootSHA256()))
		box.Kill()
	}
	// MeshCentral, with dnsmasq for DHCP and DNS.
	{
		srv, lan := benchLAN(t, "mc")
		srv.Start("dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--interface=srv0", "--bind-interfaces",
			"--dhcp-range=10.78.1.0,10.78.3.255,255.255.0.0,1h", "--dhcp-option=15,branch1.example.com", "--dhcp-option=6,10.78.0.1",
			"--address=/ProvisionServer.branch1.example.com/10.78.0.1", "--dhcp-leasefile="+filepath.Join(dir, "dnsmasq.leases"), "--log-facility=-")
		data := filepath.Join(dir, "meshcentral-data")
		writeMeshCentralData(t, data, ca, "10.78.0.1", adminPass, "Bench-Mebx-1!")
		server := srv.Start("node", filepath.Join(mc, "node_modules", "meshcentral"), "--datapath", data, "--debug", "amtsca")
		server.WaitOutput(t, "AMT provisioning server running on port 9971", 120*time.Second)
		rows = append(rows, runBenchFleet(t, "MeshCentral "+meshCentralVersion, lan, sim, n, ca.RootSHA256()))
		deadline := time.Now().Add(30 * time.Second)
		for strings.Count(server.Output(), "Intel AMT ACM activation completed") < n && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		if c := strings.Count(server.Output(), "Intel AMT ACM activation completed"); c != n {
			t.Errorf("MeshCentral logged %d ACM activations, want %d", c, n)
		}
	}

	bb, peer := rows[0], rows[1]
	row := func(what string, b, p spanFigures) string {
		return fmt.Sprintf("| AMT ACM activations, %d amtsim devices booting at once: device's first hello → %s | %.1f/s; p50 %.2f s, p99 %.2f s | %s: %.1f/s; p50 %.2f s, p99 %.2f s | %.2f× |\n",
			n, what, b.rate, b.p50.Seconds(), b.p99.Seconds(), peer.name, p.rate, p.p50.Seconds(), p.p99.Seconds(), b.rate/p.rate)
	}
	out := row("its CommitChanges", bb.commit, peer.commit) + row("activated with TLS on", bb.done, peer.done)
	t.Log(out)
	if path := os.Getenv("BRANCHBOX_BENCH_OUT"); path != "" {
		writeFile(t, path, out, 0o644)
	}
}

// benchLAN is a server namespace (srv0, 10.78.0.1/16) and a LAN namespace
// whose lan0 the fleet's macvlans hang off.
func benchLAN(t *testing.T, tag string) (srv, lan *NS) {
	srv, lan = NewNS(t, tag+"srv"), NewNS(t, tag+"lan")
	Link(t, srv, "srv0", "10.78.0.1/16", lan, "lan0", "")
	return srv, lan
}

type activationFigures struct {
	name string
	// done: activated with TLS on; commit: the device's CommitChanges.
	done, commit spanFigures
}

type spanFigures struct {
	rate     float64
	p50, p99 time.Duration
}

// spans turns per-device start and end times into the row's figures:
// devices over first start → last end, and each device's own p50/p99.
func spans(first, end map[string]time.Time) spanFigures {
	var start, last time.Time
	var each []time.Duration
	for u, at := range end {
		h := first[u]
		each = append(each, at.Sub(h))
		if start.IsZero() || h.Before(start) {
			start = h
		}
		if at.After(last) {
			last = at
		}
	}
	slices.Sort(each)
	return spanFigures{rate: float64(len(end)) / last.Sub(start).Seconds(),
		p50: each[(len(each)*50+99)/100-1], p99: each[(len(each)*99+99)/100-1]}
}

// runBenchFleet boots n devices and waits until each is activated in ACM
// with operational TLS on; the figures come from the devices' own lines.
func runBenchFleet(t *testing.T, name string, lan *NS, sim string, n int, rootHash string) activationFigures {
	t.Helper()
	f := lan.Start(sim, "--count", fmt.Sprint(n), "--interface", "lan0", "--custom-root-hash", rootHash,
		"--hello-schedule", "100x2s", "--dhcp-timeout", "3s", "--status-json")
	type line struct {
		UUID     string    `json:"uuid"`
		Event    string    `json:"event"`
		State    string    `json:"state"`
		Mode     string    `json:"control_mode"`
		Time     time.Time `json:"time"`
		Features struct {
			TLS struct {
				Enabled bool `json:"enabled"`
			} `json:"tls"`
		} `json:"features"`
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		first, done, commit := map[string]time.Time{}, map[string]time.Time{}, map[string]time.Time{}
		for _, l := range strings.Split(f.Output(), "\n") {
			var e line
			if !strings.HasPrefix(l, "{") || json.Unmarshal([]byte(l), &e) != nil {
				continue
			}
			if _, ok := first[e.UUID]; !ok && e.Event == "hello" {
				first[e.UUID] = e.Time
			}
			if _, ok := commit[e.UUID]; !ok && e.Event == "commit" {
				commit[e.UUID] = e.Time
			}
			if _, ok := done[e.UUID]; !ok && e.State == "post-provisioning" && e.Mode == "acm" && e.Features.TLS.Enabled {
				done[e.UUID] = e.Time
			}
		}
		if len(done) == n && len(commit) == n {
			f.Kill()
			fig := activationFigures{name: name, done: spans(first, done), commit: spans(first, commit)}
			t.Logf("%s: %d devices activated with TLS on in %.2f s", name, n, float64(n)/fig.done.rate)
			return fig
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d devices committed in 10 minutes\n%s", name, len(done), n, tail(f.Output(), 20))
		}
		time.Sleep(500 * time.Millisecond)
	}
}
