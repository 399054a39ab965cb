package main

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/amt"
	gwsman "github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/wsman"

	"github.com/branchbox/branchbox/tests/amtsim/certgen"
	"github.com/branchbox/branchbox/tests/amtsim/firmware"
	"github.com/branchbox/branchbox/tests/amtsim/fleet"
	"github.com/branchbox/branchbox/tests/amtsim/hello"
)

// Fleet mode with --mei-dir and --setup-mode=false: devices boot
// pre-provisioning and stay silent until an agent hands over an OTP and
// opens the window over MEI; then the device says hello at once, and a
// setup server reads the OTP back and activates it.
func TestFleetMEIStartsHellos(t *testing.T) {
	const statusPort = 8098
	l := newLAN(t)
	hellos := l.listenHello(t)
	root, err := certgen.Build(certgen.CA("amtsim Fleet MEI Root"))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := certgen.Extend(root, certgen.Leaf("prov."+testDomain), certgen.CA("Fleet MEI Issuing CA"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fp := startFleet(t, l, "--count", "2", "--setup-mode=false", "--mei-dir", dir,
		"--custom-root-hash", hex.EncodeToString(firmware.Digest(hello.SHA256, root.Certs[0].Raw)),
		"--status-listen", fmt.Sprintf("127.0.0.1:%d", statusPort), "--hello-schedule", "1x1s,100x3s", "--dhcp-timeout", "2s")

	hc := &http.Client{Transport: &http.Transport{DialContext: nsDial(l.dev)}}
	var status []fleet.DeviceStatus
	deadline := time.Now().Add(60 * time.Second)
	for {
		status = nil
		if resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/", statusPort)); err == nil {
			resp.Body.Close()
			status = fetchStatus(t, hc, statusPort)
		}
		if len(status) == 2 && status[0].IP != "" && status[1].IP != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no DHCP leases: %+v\n%s", status, fp.output())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A device in factory state says no hello; the schedule would have sent
	// one at once.
	select {
	case h := <-hellos:
		t.Fatalf("hello from %s before StartConfiguration", h.from)
	case <-time.After(3 * time.Second):
	}

	p := dialPTHI(t, filepath.Join(dir, "1.mei"))
	in := p.info()
	st := status[0]
	if in.UUID != st.UUID || in.IP != st.IP || in.MAC != st.MAC || in.DNSSuffix != testDomain || st.DNSSuffix != testDomain ||
		in.State != "pre-provisioning" || st.State != "pre-provisioning" || len(in.Hashes) != len(st.Hashes) {
		t.Fatalf("device 1 over MEI %+v\nstatus %+v", in, st)
	}
	const otp = "Fleet-OTP-0815"
	p.ok(0x0400002A, ansiOTP(otp)) // SetProvisioningServerOTP
	p.ok(0x04000029, nil)          // StartConfiguration
	select {
	case h := <-hellos:
		if h.from != st.IP || h.packet.UUID.String() != st.UUID || h.packet.RetryCount != 0 {
			t.Fatalf("hello from %s (uuid %s, retry %d), want device 1 at %s", h.from, h.packet.UUID, h.packet.RetryCount, st.IP)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no hello after StartConfiguration\n%s", fp.output())
	}

	// The setup server's session: the OTP read back, then the activation.
	c := gwsman.NewClient("https://"+st.IP+":16993/wsman", "admin", "", true)
	c.Transport = &http.Transport{DialContext: nsDial(l.srv), TLSClientConfig: &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{chain.TLSCertificate()}}}
	resp, err := c.Post(amt.NewMessages().SetupAndConfigurationService.Get())
	if err != nil {
		t.Fatal(err)
	}
	if want := "<g:ProvisioningServerOTP>" + base64.StdEncoding.EncodeToString([]byte(otp)) + "<"; !strings.Contains(string(resp), want) {
		t.Fatalf("no %s in\n%s", want, resp)
	}
	provisionSession(t, c, "Adm1n-Pass!")
	if got := p.info(); got.State != "post-provisioning" || got.ControlMode != "acm" {
		t.Fatalf("device 1 after commit: %+v", got)
	}
	if _, err := unixWSMan(filepath.Join(dir, "1.lms"), "admin", "Adm1n-Pass!").Post(amt.NewMessages().GeneralSettings.Get()); err != nil {
		t.Fatalf("device 1 local endpoint as admin: %v", err)
	}

	// Device 2 was never started: still silent and pre-provisioning.
	for _, s := range fetchStatus(t, hc, statusPort) {
		if s.Index == 2 && (s.State != "pre-provisioning" || s.HellosSent != 0) {
			t.Fatalf("device 2 %+v", s)
		}
	}
	if got := dialPTHI(t, filepath.Join(dir, "2.mei")).info(); got.State != "pre-provisioning" || got.IP != status[1].IP {
		t.Fatalf("device 2 over MEI %+v", got)
	}
	if !strings.Contains(fp.output(), "event=start-configuration") {
		t.Fatalf("no start-configuration line:\n%s", fp.output())
	}
}
