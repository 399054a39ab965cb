package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/branchbox/branchbox/provisioner/democa"
)

// TestCtlEveryAction runs each ctl command against a lab appliance with a
// fleet that activates and one that fails, in both output forms, and reads
// the named series from /metrics.
func TestCtlEveryAction(t *testing.T) {
	site := &labSite{Name: "ops", Octet: 87, Domain: "branch7.e2e.example"}
	l := newLab(t, "", site)
	good := l.startFleet("ops", 2, true)
	bad := l.startFleet("ops", 1, false) // no custom root hash: fails root-hash
	l.waitStates(2*time.Minute, map[*fleet]string{good: "activated", bad: "failed"})
	run := func(args ...string) string {
		t.Helper()
		return l.app.MustRun(l.bin, append([]string{"ctl", "--config", l.cfg}, args...)...)
	}
	jsonOf := func(v any, args ...string) {
		t.Helper()
		out := run(append([]string{"--output", "json"}, args...)...)
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("ctl %v: %v\n%s", args, err, out)
		}
	}
	contains := func(out string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("output lacks %q:\n%s", w, out)
			}
		}
	}
	failed := bad.devices()[0].UUID

	// Reads, both forms.
	var st struct{ Role, Node string }
	jsonOf(&st, "status")
	contains(run("status"), "role", "leader", "provisioner")
	var members []struct{ ID, Role string }
	jsonOf(&members, "cluster", "status")
	contains(run("cluster", "status"), "e2eprov", "leader")
	var ds []apiDevice
	jsonOf(&ds, "devices", "--state", "activated")
	if len(ds) != 2 {
		t.Errorf("devices --state activated: %d", len(ds))
	}
	contains(run("devices"), failed, "failed", "activated")
	var d deviceDetail
	jsonOf(&d, "devices", "show", failed)
	contains(d.LastError, "root-hash")
	var leases []struct{ IP, Site string }
	jsonOf(&leases, "leases")
	if len(leases) < 3 {
		t.Errorf("leases: %v", leases)
	}
	contains(run("leases"), "10.87.")
	var sites []struct{ Name string }
	jsonOf(&sites, "sites")
	contains(run("sites"), "ops", "branch7.e2e.example")
	var audit []struct{ Action string }
	jsonOf(&audit, "audit", "--limit", "5")
	contains(run("audit"), "ACTION")
	contains(run("tls", "ca"), "BEGIN CERTIFICATE")

	// Certificate: shown with every rule; an upload is checked first.
	var cert struct {
		OK      bool
		Results []struct{ Rule, Status string }
	}
	jsonOf(&cert, "sites", "cert", "ops")
	if !cert.OK || len(cert.Results) < 10 {
		t.Errorf("sites cert: %+v", cert)
	}
	contains(run("sites", "cert", "ops"), "PASS", "domain-suffix", "valid until")
	// Config-file sites keep their certificate in the file.
	if out, err := l.app.Run(l.bin, "ctl", "--config", l.cfg, "sites", "cert", "ops", "--chain", filepath.Join(site.dir, "chain.pem"), "--key", filepath.Join(site.dir, "key.pem")); err == nil || !strings.Contains(out, "config file") {
		t.Errorf("cert upload on a config site: %v %s", err, out)
	}
	siteYAML := filepath.Join(l.dir, "api-site.yaml")
	writeFile(t, siteYAML, "name: apisite\ndomain: api.e2e.example\nrelay: true\nsubnet: 10.99.0.0/24\nrange: [10.99.0.10, 10.99.0.20]\n", 0o644)
	if out, err := l.app.Run(l.bin, "ctl", "--config", l.cfg, "sites", "add", siteYAML); err != nil {
		// A relayed site needs dhcp.relay_listen; an interface site needs the interface.
		writeFile(t, siteYAML, "name: apisite\ndomain: api.e2e.example\ninterface: lan-ops\nsubnet: 10.99.0.0/24\nrange: [10.99.0.10, 10.99.0.20]\n", 0o644)
		if out2, err := l.app.Run(l.bin, "ctl", "--config", l.cfg, "sites", "add", siteYAML); err != nil {
			t.Fatalf("sites add: %v %s / %s", err, out, out2)
		}
	}
	wrong, err := democa.Generate(democa.Options{Domain: "elsewhere.example"})
	if err != nil {
		t.Fatal(err)
	}
	wdir := filepath.Join(l.dir, "wrongca")
	if _, err := wrong.WriteFiles(wdir); err != nil {
		t.Fatal(err)
	}
	out, err := l.app.Run(l.bin, "ctl", "--config", l.cfg, "sites", "cert", "apisite", "--chain", filepath.Join(wdir, "chain.pem"), "--key", filepath.Join(wdir, "key.pem"))
	if err == nil || !strings.Contains(out, "rule domain-suffix") {
		t.Errorf("wrong-domain upload: %v\n%s", err, out)
	}
	right, err := democa.Generate(democa.Options{Domain: "api.e2e.example"})
	if err != nil {
		t.Fatal(err)
	}
	rdir := filepath.Join(l.dir, "rightca")
	if _, err := right.WriteFiles(rdir); err != nil {
		t.Fatal(err)
	}
	contains(run("sites", "cert", "apisite", "--chain", filepath.Join(rdir, "chain.pem"), "--key", filepath.Join(rdir, "key.pem")), "PASS", "key-match")
	if b, _ := os.ReadFile(filepath.Join(rdir, "key.pem")); strings.Contains(l.box.Output(), strings.TrimSpace(string(b))[40:80]) {
		t.Error("the uploaded key reached the log")
	}
	contains(run("sites", "delete", "apisite"), "deleted")

	// Files.
	bin := filepath.Join(l.dir, "setup.bin")
	pass := filepath.Join(l.dir, "mebx.pass")
	writeFile(t, pass, "Mebx-Pass1!\n", 0o600)
	contains(run("sites", "setup-bin", "ops", "--mebx-password-file", pass, "-o", bin), "wrote")
	contains(run("sites", "psk", "ops", "--count", "2", "--mebx-password-file", pass, "-o", bin), "PIDs:")

	// Writes: OTP registration, inventory with progress, retry.
	var otp struct{ UUID, OTP string }
	jsonOf(&otp, "devices", "register", "bbbbbbbb-0000-4000-8000-000000000001", "--site", "ops")
	if len(otp.OTP) < 8 {
		t.Errorf("register: %+v", otp)
	}
	csv := filepath.Join(l.dir, "inv.csv")
	var rows strings.Builder
	for i := 1; i <= 130; i++ {
		fmt.Fprintf(&rows, "cccccccc-0000-4000-8000-%012d,pc-%03d,ops,e2e\n", i, i)
	}
	writeFile(t, csv, rows.String(), 0o644)
	contains(run("devices", "import", csv), "importing 0/130", "importing 100/130", "imported 130 device(s)")
	var imported struct{ Imported int }
	jsonOf(&imported, "devices", "import", csv)
	if imported.Imported != 130 {
		t.Errorf("import json: %+v", imported)
	}
	if out, err := l.app.Run(l.bin, "ctl", "--config", l.cfg, "devices", "retry", good.devices()[0].UUID); err == nil || !strings.Contains(out, "only a failed device") {
		t.Errorf("retry of an activated device: %v %s", err, out)
	}

	// Watch while the failed device is retried: its new attempt shows up
	// live, then the progress line.
	watch := l.app.Start(l.bin, "ctl", "--config", l.cfg, "devices", "--watch", "--site", "ops")
	watch.WaitOutput(t, "progress: activated 2/", 15*time.Second)
	contains(run("devices", "retry", failed), "retrying")
	watch.WaitOutput(t, failed+"  failed", 60*time.Second)
	watch.Kill()
	jsonOf(&d, "devices", "show", failed)
	retried := false
	for _, e := range d.History {
		retried = retried || strings.Contains(e.Detail, "retry requested by api")
	}
	if !retried {
		t.Errorf("no retry in the history: %+v", d.History)
	}

	// Metrics, as a Prometheus server would scrape them.
	metrics := l.app.MustRun("curl", "-sf", "http://127.0.0.1:18443/metrics")
	for _, series := range []string{
		`branchbox_dhcp_site_requests_total{site="ops"}`, `branchbox_dhcp_replies_total{type="ACK"}`,
		`branchbox_dhcp_leases{site="ops",state="bound"}`, `branchbox_dhcp_pool_size{site="ops"}`, `branchbox_dhcp_pool_used_ratio{site="ops"}`,
		`branchbox_provisioner_hellos_total{result="accepted"}`, `branchbox_provisioner_activations_total{result="activated"}`,
		`branchbox_provisioner_failures_total{reason="certificate:root-hash"}`, `branchbox_provisioner_sessions_inflight`,
		`branchbox_devices{state="activated"} 2`, `branchbox_raft_state{state="leader"} 1`, `branchbox_raft_commit_index`, `branchbox_raft_commit_seconds_count`,
		`coredns_dns_requests_total`,
	} {
		if !strings.Contains(metrics, series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
}
