package e2e

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/branchbox/branchbox/provisioner/democa"
)

// meshCentralVersion is the independent provisioning server amtsim is
// checked against: MeshCentral's AMT hello server is the one open-source
// bare-metal RCFG server (issue 18).
const meshCentralVersion = "1.1.55"

// TestMeshCentralActivatesAMTSim runs MeshCentral, installed from npm into
// a throw-away directory and confined to a network namespace with no route
// out, against an amtsim device: hello → MeshCentral connects back with its
// ACM chain → MEBx password, admin ACL entry, time sync, TLS key, certificate
// and context, CommitChanges → MeshCentral logs "Intel AMT ACM activation
// completed" and amtsim shows the device activated in ACM, its admin
// account answering with the password MeshCentral set.
func TestMeshCentralActivatesAMTSim(t *testing.T) {
	RequireRoot(t)
	_, sim := provisionBinaries(t)
	mc := installMeshCentral(t)
	ns := NewNS(t, "mc")
	const (
		domain    = "branch1.example.com"
		uuid      = "5d7c0a1e-3b2f-4c8d-9e6a-7f1b2c3d4e5f"
		adminPass = "Mc-Admin-Pass1!"
		mebxPass  = "Mc-Mebx-Pass1!"
		device    = "127.0.0.2" // MeshCentral connects back to the hello's source
	)
	ca, err := democa.Generate(democa.Options{Domain: domain})
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(t.TempDir(), "meshcentral-data")
	writeMeshCentralData(t, data, ca, "127.0.0.1", adminPass, mebxPass)
	server := ns.Start("node", filepath.Join(mc, "node_modules", "meshcentral"), "--datapath", data, "--debug", "amtsca")
	server.WaitOutput(t, "AMT provisioning server running on port 9971", 120*time.Second)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("MeshCentral:\n%s", tail(server.Output(), 40))
		}
	})

	status := device + ":8099"
	dev := ns.Start(sim, "serve", "--listen", device+":16993", "--uuid", uuid, "--domain", domain,
		"--custom-root-hash", ca.RootSHA256(), "--status-listen", status)
	dev.WaitOutput(t, "listening on "+device+":16993", 30*time.Second)

	start := time.Now()
	if err := SendHello(ns, device, "127.0.0.1:9971", uuid, ca.RootSHA256()); err != nil {
		t.Fatalf("hello: %v", err)
	}
	server.WaitOutput(t, "Intel AMT ACM activation completed", 90*time.Second)
	t.Logf("MeshCentral: hello → \"Intel AMT ACM activation completed\" in %s", time.Since(start).Round(time.Millisecond))
	for _, step := range []string{"Setting MEBx password", "Admin password set", "Generating key pair", "Adding certificate", "Enabling TLS on remote port", "Performing commit"} {
		if !strings.Contains(server.Output(), step) {
			t.Errorf("MeshCentral log lacks %q", step)
		}
	}

	st := simStatus(t, ns, status)
	if st.State != "post-provisioning" || st.ControlMode != "acm" || !st.Features.TLS.Enabled {
		t.Fatalf("amtsim after MeshCentral: %+v", st)
	}
	// The admin account answers with the password MeshCentral set (over
	// the TLS certificate MeshCentral issued, which curl does not verify).
	for pass, want := range map[string]string{adminPass: "200", "Wrong-Pass1!": "401"} {
		out, _ := ns.Run("curl", "-sk", "--max-time", "20", "--digest", "-u", "admin:"+pass, "-o", "/dev/null", "-w", "%{http_code}",
			"-H", "Content-Type: application/soap+xml;charset=UTF-8", "--data-binary", getSetupService, "https://"+device+":16993/wsman")
		if out != want {
			t.Errorf("digest admin with %s password: HTTP %s, want %s", map[bool]string{true: "MeshCentral's", false: "a wrong"}[pass == adminPass], out, want)
		}
	}
}

const getSetupService = `<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><s:Header><a:Action s:mustUnderstand="true">http://schemas.xmlsoap.org/ws/2004/09/transfer/Get</a:Action><a:To s:mustUnderstand="true">/wsman</a:To><w:ResourceURI s:mustUnderstand="true">http://intel.com/wbem/wscim/1/amt-schema/1/AMT_SetupAndConfigurationService</w:ResourceURI><a:MessageID s:mustUnderstand="true">uuid:00000000-8086-8086-8086-000000000001</a:MessageID><a:ReplyTo><a:Address>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo></s:Header><s:Body/></s:Envelope>`

// installMeshCentral installs the pinned MeshCentral from the npm registry
// into a throw-away directory. Only an unreachable registry skips the test.
//
// MeshCentral 1.1.55 reverses its leaf-first ACM chain before handing it to
// Node's TLS, which then pairs the root with the leaf's key and throws
// ERR_OSSL_X509_KEY_VALUES_MISMATCH before connecting back (upstream issue
// Ylianst/MeshCentral#4901). That one expression is patched here, in the
// throw-away copy, and nothing else.
func installMeshCentral(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: MeshCentral runs on the machine's Node.js", tool)
		}
	}
	dir := t.TempDir()
	cmd := exec.Command("npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", dir, "meshcentral@"+meshCentralVersion)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("npm cannot install meshcentral@%s (registry unreachable?): %v\n%s", meshCentralVersion, err, tail(string(out), 10))
	}
	file := filepath.Join(dir, "node_modules", "meshcentral", "amtprovisioningserver.js")
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	const buggy, fixed = "dev.certchain.certs.reverse().join('')", "dev.certchain.certs.join('')"
	if bytes.Count(src, []byte(buggy)) != 1 {
		t.Fatalf("MeshCentral %s: the chain-reversal expression of #4901 is not where expected", meshCentralVersion)
	}
	t.Logf("patched MeshCentral#4901 in the throw-away copy: %s → %s", buggy, fixed)
	if err := os.WriteFile(file, bytes.Replace(src, []byte(buggy), []byte(fixed), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// writeMeshCentralData lays out MeshCentral's data directory: LAN-only
// config with the AMT hello server on, the ACM chain one certificate per
// file (leaf first), and an NeDB record for a device group whose policy
// is ACM activation with adminPass.
func writeMeshCentralData(t *testing.T, dir string, ca *democa.Chain, helloIP, adminPass, mebxPass string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var files []string
	rest := ca.ChainPEM()
	for i := 1; ; i++ {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		name := fmt.Sprintf("acm-%d.pem", i)
		writeFile(t, filepath.Join(dir, name), string(pem.EncodeToMemory(b)), 0o644)
		files = append(files, name)
	}
	writeFile(t, filepath.Join(dir, "acm-key.pem"), string(ca.KeyPEM()), 0o600)
	// MeshCentral matches its certificate by the CN's registrable domain
	// (setup.branch1.example.com → example.com) against trustedfqdn.
	cfg := map[string]any{
		"settings": map[string]any{
			"cert": "mc.example.com", "port": 4430, "redirport": 0, "exactports": true, "selfupdate": false, "lanonly": true,
			"amtprovisioningserver": map[string]any{"port": 9971, "ip": helloIP, "devicegroup": "mesh//amtlab",
				"newmebxpassword": mebxPass, "trustedfqdn": "example.com"},
		},
		"domains": map[string]any{"": map[string]any{"amtacmactivation": map[string]any{
			"log": "amtactivation.log", "certs": map[string]any{"lab": map[string]any{"certfiles": files, "keyfile": "acm-key.pem"}},
		}}},
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	writeFile(t, filepath.Join(dir, "config.json"), string(b), 0o600)
	group, _ := json.Marshal(map[string]any{"type": "mesh", "_id": "mesh//amtlab", "name": "AMT lab", "mtype": 1, "desc": "", "domain": "",
		"links": map[string]any{}, "amt": map[string]any{"type": 3, "password": adminPass}})
	writeFile(t, filepath.Join(dir, "meshcentral.db"), string(group)+"\n", 0o600)
}

type simStatusEntry struct {
	State       string `json:"state"`
	ControlMode string `json:"control_mode"`
	Features    struct {
		TLS struct {
			Enabled bool `json:"enabled"`
		} `json:"tls"`
	} `json:"features"`
}

// simStatus reads amtsim serve's status endpoint from inside ns.
func simStatus(t *testing.T, ns *NS, addr string) simStatusEntry {
	t.Helper()
	var out []simStatusEntry
	err := ns.GetJSON(addr, &out)
	if err != nil || len(out) != 1 {
		t.Fatalf("amtsim status: %v %v", err, out)
	}
	return out[0]
}
