package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/amt"
	gwsman "github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/wsman"

	"github.com/branchbox/branchbox/tests/amtsim/certgen"
	"github.com/branchbox/branchbox/tests/amtsim/device"
	"github.com/branchbox/branchbox/tests/amtsim/firmware"
	"github.com/branchbox/branchbox/tests/amtsim/hello"
)

// pthiClient is a minimal host-interface client written from the byte
// layouts of amt-protocol.md §7.1 (Intel's PTHI structures, rpc-go, MeshCentral),
// independently of amtsim's mei package: it is the oracle check of what
// amtsim puts on the socket.
type pthiClient struct {
	t *testing.T
	c net.Conn
}

func dialPTHI(t *testing.T, path string) *pthiClient {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &pthiClient{t: t, c: c}
}

// call sends one request (header 01 01 0000, command, length, payload) and
// reads one response; it returns the status and the bytes after it.
func (p *pthiClient) call(cmd uint32, payload []byte) (uint32, []byte) {
	p.t.Helper()
	_ = p.c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := []byte{1, 1, 0, 0}
	msg = binary.LittleEndian.AppendUint32(msg, cmd)
	msg = binary.LittleEndian.AppendUint32(msg, uint32(len(payload)))
	if _, err := p.c.Write(append(msg, payload...)); err != nil {
		p.t.Fatalf("PTHI 0x%08x: %v", cmd, err)
	}
	h := make([]byte, 12)
	if _, err := io.ReadFull(p.c, h); err != nil {
		p.t.Fatalf("PTHI 0x%08x: response header: %v", cmd, err)
	}
	if !bytes.Equal(h[:4], []byte{1, 1, 0, 0}) || binary.LittleEndian.Uint32(h[4:8]) != cmd|0x00800000 {
		p.t.Fatalf("PTHI 0x%08x: response header % x", cmd, h)
	}
	body := make([]byte, binary.LittleEndian.Uint32(h[8:12]))
	if len(body) < 4 {
		p.t.Fatalf("PTHI 0x%08x: %d-byte response", cmd, len(body))
	}
	if _, err := io.ReadFull(p.c, body); err != nil {
		p.t.Fatalf("PTHI 0x%08x: response body: %v", cmd, err)
	}
	return binary.LittleEndian.Uint32(body[:4]), body[4:]
}

// ok calls and demands AMT_STATUS_SUCCESS.
func (p *pthiClient) ok(cmd uint32, payload []byte) []byte {
	p.t.Helper()
	st, data := p.call(cmd, payload)
	if st != 0 {
		p.t.Fatalf("PTHI 0x%08x: status %d", cmd, st)
	}
	return data
}

func (p *pthiClient) u32(cmd uint32) uint32 {
	p.t.Helper()
	return binary.LittleEndian.Uint32(p.ok(cmd, nil))
}

func ansiOTP(s string) []byte {
	return append(binary.LittleEndian.AppendUint16(nil, uint16(len(s))), s...)
}

func nulTerminated(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

// info is what an agent's "info" derives from PTHI, in amtsim's status names.
type info struct {
	UUID        string              `json:"uuid"`
	AMTVersion  string              `json:"amt_version"`
	Build       string              `json:"build"`
	SKU         string              `json:"sku"`
	State       string              `json:"state"`
	ControlMode string              `json:"control_mode"`
	DNSSuffix   string              `json:"dns_suffix"`
	Hashes      []device.HashStatus `json:"hashes"`
	MAC         string              `json:"mac"`
	IP          string              `json:"ip"`
}

func (p *pthiClient) info() info {
	p.t.Helper()
	var in info
	w := p.ok(0x0400005C, nil) // GetUUID, formatted as rpc-go does
	in.UUID = fmt.Sprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%x", w[3], w[2], w[1], w[0], w[5], w[4], w[7], w[6], w[8], w[9], w[10:16])
	cv := p.ok(0x0400001A, nil) // GetCodeVersions
	for i := range int(binary.LittleEndian.Uint32(cv[65:69])) {
		e := cv[69+44*i : 69+44*(i+1)]
		name := string(e[2 : 2+binary.LittleEndian.Uint16(e[0:2])])
		value := string(e[24 : 24+binary.LittleEndian.Uint16(e[22:24])])
		switch name {
		case "AMT":
			in.AMTVersion = value
		case "Build Number":
			in.Build = value
		case "Sku":
			in.SKU = value
		}
	}
	in.State = []string{"pre-provisioning", "in-provisioning", "post-provisioning"}[p.u32(0x04000011)]
	in.ControlMode = []string{"none", "ccm", "acm"}[p.u32(0x0400006B)]
	sfx := p.ok(0x04000036, nil) // GetPkiFqdnSuffix
	in.DNSSuffix = string(sfx[2 : 2+binary.LittleEndian.Uint16(sfx)])
	handles := p.ok(0x0400002C, nil) // EnumerateHashHandles
	algs := map[byte]struct {
		name string
		size int
	}{1: {"SHA1", 20}, 2: {"SHA256", 32}, 3: {"SHA384", 48}}
	for i := range int(binary.LittleEndian.Uint32(handles)) {
		e := p.ok(0x0400002D, handles[4+4*i:8+4*i]) // GetCertificateHashEntry
		alg := algs[e[72]]
		in.Hashes = append(in.Hashes, device.HashStatus{
			Name: string(e[75 : 75+binary.LittleEndian.Uint16(e[73:75])]), Algorithm: alg.name,
			Hash: hex.EncodeToString(e[8 : 8+alg.size]), Active: binary.LittleEndian.Uint32(e[4:8]) == 1,
			Default: binary.LittleEndian.Uint32(e[0:4]) == 1,
		})
	}
	lan := p.ok(0x04000048, []byte{0, 0, 0, 0}) // GetLANInterfaceSettings, wired
	addr := binary.LittleEndian.Uint32(lan[4:8])
	in.IP = fmt.Sprintf("%d.%d.%d.%d", addr>>24, addr>>16&0xff, addr>>8&0xff, addr&0xff)
	in.MAC = net.HardwareAddr(lan[14:20]).String()
	return in
}

func serveStatus(t *testing.T, url string) info {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var all []info
	if err := json.NewDecoder(resp.Body).Decode(&all); err != nil || len(all) != 1 {
		t.Fatalf("status: %v, %d entries", err, len(all))
	}
	return all[0]
}

// unixWSMan is a digest WS-Man client on the local (LMS-like) Unix socket.
func unixWSMan(path, user, password string) *gwsman.Client {
	c := gwsman.NewClient("http://lms/wsman", user, password, true)
	c.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}
	return c
}

// Agent-initiated provisioning against "amtsim serve": the OTP hand-off over
// MEI opens the window, the setup server reads the OTP back over TLS and
// activates, after which the firmware refuses the setup commands and the
// local endpoint takes the new admin password.
func TestServeMEIOTPHandOff(t *testing.T) {
	const (
		domain   = "branch.example.com"
		uuid     = "939b524b-13d4-1d18-e487-1c697a6b7a2b"
		otp      = "Branch-OTP-4711"
		newAdmin = "Adm1n-Pass!"
	)
	root, err := certgen.Build(certgen.CA("amtsim MEI Root"))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := certgen.Extend(root, certgen.Leaf("prov."+domain), certgen.CA("MEI Issuing CA"))
	if err != nil {
		t.Fatal(err)
	}
	rootHash := hex.EncodeToString(firmware.Digest(hello.SHA256, root.Certs[0].Raw))
	dir := t.TempDir()
	meiPath, lmsPath := filepath.Join(dir, "mei"), filepath.Join(dir, "lms")
	addr, stderr, lines := startServeLines(t, buildBinary(t), "--domain", domain, "--uuid", uuid, "--custom-root-hash", rootHash,
		"--setup-mode=false", "--mei-socket", meiPath, "--local-listen", "unix:"+lmsPath,
		"--status-listen", "127.0.0.1:0", "--log-level", "debug")
	var statusURL string
	for _, l := range lines {
		if m := regexp.MustCompile(`status on (http://\S+)`).FindStringSubmatch(l); m != nil {
			statusURL = m[1]
		}
	}
	if statusURL == "" {
		t.Fatalf("no status endpoint in %q", lines)
	}
	p := dialPTHI(t, meiPath)

	// The device as an agent sees it equals amtsim's status, field for field.
	got, want := p.info(), serveStatus(t, statusURL)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("PTHI info\n%+v\nstatus\n%+v", got, want)
	}
	if got.UUID != uuid || got.AMTVersion != "16.1.27" || got.Build != "2176" || got.SKU != "16392" || got.State != "pre-provisioning" ||
		got.ControlMode != "none" || got.DNSSuffix != domain || got.IP != "127.0.0.1" || len(got.Hashes) != 24 {
		t.Fatalf("info %+v", got)
	}
	if h := got.Hashes[23]; h.Hash != rootHash || !h.Active || h.Default || h.Algorithm != "SHA256" {
		t.Fatalf("custom root entry %+v", h)
	}

	// GetLocalSystemAccount: 40 reserved bytes in; user[33], password[33]
	// and two bytes of padding out. The account opens the local endpoint.
	acct := p.ok(0x04000067, make([]byte, 40))
	if len(acct) != 68 {
		t.Fatalf("local account: %d bytes", len(acct))
	}
	user, password := nulTerminated(acct[:33]), nulTerminated(acct[33:66])
	if user != "$$OsAdmin" || len(password) == 0 {
		t.Fatalf("local account %q", user)
	}
	if _, err := unixWSMan(lmsPath, user, password).Post(amt.NewMessages().GeneralSettings.Get()); err != nil {
		t.Fatalf("local endpoint as %s: %v", user, err)
	}
	if _, err := unixWSMan(lmsPath, user, password+"x").Post(amt.NewMessages().GeneralSettings.Get()); err == nil {
		t.Fatal("local endpoint took a wrong password")
	}

	tlsClient := func() *gwsman.Client {
		c := gwsman.NewClient("https://"+addr+"/wsman", "admin", "", true)
		c.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{chain.TLSCertificate()}}}
		return c
	}
	setup := amt.NewMessages().SetupAndConfigurationService
	if _, err := tlsClient().Post(setup.Get()); err == nil {
		t.Fatal("16993 answers while the window is closed")
	}
	// A window opened and closed again leaves the device pre-provisioning.
	p.ok(0x04000029, nil) // StartConfiguration
	p.ok(0x0400005E, nil) // StopConfiguration
	if st := p.u32(0x04000011); st != 0 {
		t.Fatalf("after Start+StopConfiguration: state %d", st)
	}

	// The hand-off: OTP, then the window.
	if st, _ := p.call(0x0400002A, ansiOTP("short")); st != device.PTInvalidParameter {
		t.Fatalf("5-character OTP: status %d", st)
	}
	p.ok(0x0400002A, ansiOTP(otp)) // SetProvisioningServerOTP
	p.ok(0x04000029, nil)          // StartConfiguration
	if st := p.u32(0x04000011); st != 1 || serveStatus(t, statusURL).State != "in-provisioning" {
		t.Fatalf("after StartConfiguration: state %d", st)
	}
	if st, _ := p.call(0x0400002A, ansiOTP("Other-OTP-1")); st != device.PTInvalidPTMode {
		t.Fatalf("OTP while the window is open: status %d", st)
	}
	if st, _ := p.call(0x04000099, nil); st != device.PTInvalidCommand {
		t.Fatalf("unknown command: status %d", st)
	}

	// The setup server reads the OTP back over the provisioning TLS session.
	c := tlsClient()
	resp, err := c.Post(setup.Get())
	if err != nil {
		t.Fatalf("16993 after StartConfiguration: %v\n%s", err, stderr.String())
	}
	if wantOTP := "<g:ProvisioningServerOTP>" + base64.StdEncoding.EncodeToString([]byte(otp)) + "<"; !strings.Contains(string(resp), wantOTP) {
		t.Fatalf("no %s in\n%s", wantOTP, resp)
	}
	provisionSession(t, c, newAdmin)

	// Post-provisioning: the setup commands are refused, MEI unprovision
	// too (ACM), and the local endpoint takes admin with the new password.
	if got := p.info(); got.State != "post-provisioning" || got.ControlMode != "acm" {
		t.Fatalf("after commit %+v", got)
	}
	for _, r := range []struct {
		cmd     uint32
		payload []byte
	}{{0x0400002A, ansiOTP(otp)}, {0x04000029, nil}, {0x0400005E, nil}, {0x04000010, []byte{0, 0, 0, 0}}} {
		if st, _ := p.call(r.cmd, r.payload); st != device.PTInvalidPTMode {
			t.Errorf("0x%08x after activation: status %d", r.cmd, st)
		}
	}
	if _, err := unixWSMan(lmsPath, "admin", newAdmin).Post(setup.Get()); err != nil {
		t.Fatalf("local endpoint as admin: %v", err)
	}
	for name, secret := range map[string]string{"OTP": otp, "local password": password, "admin password": newAdmin} {
		if strings.Contains(stderr.String(), secret) {
			t.Errorf("the %s is in amtsim's log", name)
		}
	}
}

// provisionSession runs the RCFG steps of amt-protocol.md §3.2 on an open session.
func provisionSession(t *testing.T, c *gwsman.Client, adminPassword string) {
	t.Helper()
	m := amt.NewMessages()
	resp, err := c.Post(m.GeneralSettings.Get())
	if err != nil {
		t.Fatal(err)
	}
	realm := regexp.MustCompile(`<g:DigestRealm>([^<]+)<`).FindSubmatch(resp)
	if realm == nil {
		t.Fatalf("no realm in\n%s", resp)
	}
	for _, msg := range []string{
		m.SetupAndConfigurationService.SetMEBXPassword("Mebx-Pass1"),
		m.AuthorizationService.SetAdminACLEntryEx("admin", base64.StdEncoding.EncodeToString(device.HA1("admin", string(realm[1]), adminPassword))),
		m.SetupAndConfigurationService.CommitChanges(),
	} {
		if resp, err := c.Post(msg); err != nil || !strings.Contains(string(resp), "<g:ReturnValue>0</g:ReturnValue>") {
			t.Fatalf("%v\n%s", err, resp)
		}
	}
}
