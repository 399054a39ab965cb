package wsman

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/branchbox/branchbox/tests/amtsim/certgen"
	"github.com/branchbox/branchbox/tests/amtsim/device"
	"github.com/branchbox/branchbox/tests/amtsim/firmware"
	"github.com/branchbox/branchbox/tests/amtsim/hello"
	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/amt"
	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/amt/general"
	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/amt/setupandconfiguration"
	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/cim"
	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/ips"
	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/ips/hostbasedsetup"
	gwsman "github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/wsman"
)

const (
	newMEBx  = "Mebx-Pass1"
	newAdmin = "Adm1n-Pass!"
)

type fixture struct {
	dev   *device.Device
	url   string
	chain *certgen.Chain
}

func chainFor(t *testing.T, cn string) *certgen.Chain {
	t.Helper()
	c, err := certgen.Build(certgen.Leaf(cn), certgen.CA("Issuing CA"), certgen.CA("Root CA"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// start runs a device; remote=true serves TLS (16993), else plain local HTTP.
func start(t *testing.T, setupMode, remote bool, mod func(*device.Config)) *fixture {
	t.Helper()
	chain := chainFor(t, "prov.example.com")
	p, err := firmware.Lookup("16.1")
	if err != nil {
		t.Fatal(err)
	}
	uuid, _ := hello.ParseUUID("939b524b-13d4-1d18-e487-1c697a6b7a2b")
	cfg := device.Config{
		UUID: uuid, Profile: p, DNSSuffix: "example.com", SetupMode: setupMode, OTP: "one-time-42",
		CustomHashes: []device.CustomHash{{Name: "test root", Alg: hello.SHA256, Sum: firmware.Digest(hello.SHA256, chain.Root().Raw)}},
	}
	if mod != nil {
		mod(&cfg)
	}
	dev, err := device.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	scheme := "https"
	if !remote {
		scheme = "http"
	}
	go func() {
		if remote {
			done <- ServeRemote(ctx, dev, ln)
		} else {
			done <- ServeLocal(ctx, dev, ln)
		}
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &fixture{dev: dev, url: scheme + "://" + ln.Addr().String() + "/wsman", chain: chain}
}

// client is go-wsman-messages' own client with a transport that can present
// a provisioning chain (its default tls.Config cannot).
func (fx *fixture) client(user, password string, cert *tls.Certificate) *gwsman.Client {
	c := gwsman.NewClient(fx.url, user, password, true)
	cfg := &tls.Config{InsecureSkipVerify: true}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	c.Transport = &http.Transport{TLSClientConfig: cfg}
	return c
}

// value returns the text of the first element with the local name.
func value(t *testing.T, resp []byte, name string) string {
	t.Helper()
	root, err := parseXML(bytes.NewReader(resp))
	if err != nil {
		t.Fatalf("response does not parse: %v", err)
	}
	var find func(*node) *node
	find = func(n *node) *node {
		if n.Name == name {
			return n
		}
		for _, c := range n.Children {
			if x := find(c); x != nil {
				return x
			}
		}
		return nil
	}
	n := find(root)
	if n == nil {
		t.Fatalf("no %s in response:\n%s", name, resp)
	}
	return n.text()
}

func post(t *testing.T, c *gwsman.Client, msg string) []byte {
	t.Helper()
	resp, err := c.Post(msg)
	if err != nil {
		t.Fatalf("post: %v", err)
	}
	return resp
}

func returnValue(t *testing.T, c *gwsman.Client, msg string) int {
	t.Helper()
	n, err := strconv.Atoi(value(t, post(t, c, msg), "ReturnValue"))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// extendProvisioningPeriod is hand-built: go-wsman-messages v1.8.1 has no
// builder for it.
func extendProvisioningPeriod(hours int) string {
	const class = "http://intel.com/wbem/wscim/1/amt-schema/1/AMT_SetupAndConfigurationService"
	return `<?xml version="1.0" encoding="utf-8"?><Envelope xmlns="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><Header>` +
		`<a:Action>` + class + `/ExtendProvisioningPeriod</a:Action><a:To>/wsman</a:To><w:ResourceURI>` + class + `</w:ResourceURI><a:MessageID>1</a:MessageID>` +
		`<a:ReplyTo><a:Address>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo><w:OperationTimeout>PT60S</w:OperationTimeout></Header>` +
		fmt.Sprintf(`<Body><h:ExtendProvisioningPeriod_INPUT xmlns:h="%s"><h:Duration>%d</h:Duration></h:ExtendProvisioningPeriod_INPUT></Body></Envelope>`, class, hours)
}

func md5b64(realm, password string) string {
	return base64.StdEncoding.EncodeToString(device.HA1("admin", realm, password))
}

// The bare-metal RCFG sequence of amt-protocol.md §3.2, every message built
// by go-wsman-messages v1.8.1 where it has a builder.
func TestRemoteConfigurationWithGoWsmanMessages(t *testing.T) {
	fx := start(t, true, true, nil)
	cert := fx.chain.TLSCertificate()
	c := fx.client("admin", "", &cert) // MeshCentral style: no digest during RCFG
	amtM, cimM := amt.NewMessages(), cim.NewMessages()

	var gs general.Response
	if err := xml.Unmarshal(post(t, c, amtM.GeneralSettings.Get()), &gs); err != nil {
		t.Fatal(err)
	}
	realm := gs.Body.AMTGeneralSettings.DigestRealm
	if len(realm) != 39 || !strings.HasPrefix(realm, "Digest:") {
		t.Fatalf("DigestRealm %q", realm)
	}
	if v := value(t, post(t, c, cimM.SoftwareIdentity.Get()), "VersionString"); v != "16.1.27" {
		t.Fatalf("VersionString %q", v)
	}
	enumCtx := value(t, post(t, c, cimM.SoftwareIdentity.Enumerate()), "EnumerationContext")
	// Items carry no attributes, as firmware sends them: every prefix is
	// declared on the Envelope. MeshCentral reads an item element with an
	// attribute as {Value, @attr} and finds no InstanceID in it.
	if items := post(t, c, cimM.SoftwareIdentity.Pull(enumCtx)); bytes.Count(items, []byte("<h:CIM_SoftwareIdentity>")) != 10 ||
		!bytes.Contains(items, []byte(`<a:Envelope xmlns:a="http://www.w3.org/2003/05/soap-envelope" xmlns:b="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:c="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:g="http://schemas.xmlsoap.org/ws/2004/09/enumeration" xmlns:h="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_SoftwareIdentity"`)) {
		t.Fatalf("Pull returned:\n%s", items)
	}
	svc := post(t, c, amtM.SetupAndConfigurationService.Get())
	if v := value(t, svc, "ProvisioningState"); v != "1" {
		t.Fatalf("ProvisioningState %s", v)
	}
	if otp, _ := base64.StdEncoding.DecodeString(value(t, svc, "ProvisioningServerOTP")); string(otp) != "one-time-42" {
		t.Fatalf("OTP %q", otp)
	}
	if rv := returnValue(t, c, extendProvisioningPeriod(6)); rv != 0 {
		t.Fatalf("ExtendProvisioningPeriod: %d", rv)
	}
	if rv := returnValue(t, c, amtM.SetupAndConfigurationService.CommitChanges()); rv != device.PTDataMissing {
		t.Fatalf("CommitChanges before MEBx: %d", rv)
	}
	if rv := returnValue(t, c, amtM.SetupAndConfigurationService.SetMEBXPassword(newMEBx)); rv != 0 {
		t.Fatalf("SetMEBxPassword: %d", rv)
	}
	// v1.8.1 spells the element SetAdminACLEntryEx_INPUT; accepted with a warning.
	if rv := returnValue(t, c, amtM.AuthorizationService.SetAdminACLEntryEx("admin", md5b64(realm, newAdmin))); rv != 0 {
		t.Fatalf("SetAdminAclEntryEx: %d", rv)
	}
	tr := post(t, c, amtM.TimeSynchronizationService.GetLowAccuracyTimeSynch())
	ta0, err := strconv.ParseInt(value(t, tr, "Ta0"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Unix()
	if rv := returnValue(t, c, amtM.TimeSynchronizationService.SetHighAccuracyTimeSynch(ta0, now, now)); rv != 0 {
		t.Fatalf("SetHighAccuracyTimeSynch: %d", rv)
	}
	if rv := returnValue(t, c, amtM.SetupAndConfigurationService.CommitChanges()); rv != 0 {
		t.Fatalf("CommitChanges: %d", rv)
	}
	if st, mode := fx.dev.State(); st != device.PostProvisioning || mode != device.ModeAdmin {
		t.Fatalf("after commit %s/%s", st, mode)
	}

	// Reconnect as a management console would: digest with the new password.
	if _, err := fx.client("admin", "wrong-Pass1!", nil).Post(amtM.GeneralSettings.Get()); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := fx.client("", "", nil).Post(amtM.GeneralSettings.Get()); err == nil {
		t.Fatal("unauthenticated request accepted after provisioning")
	}
	admin := fx.client("admin", newAdmin, nil)
	if v := value(t, post(t, admin, amtM.SetupAndConfigurationService.Get()), "ProvisioningState"); v != "2" {
		t.Fatalf("ProvisioningState after commit %s", v)
	}
	var un setupandconfiguration.UnprovisionResponse
	if err := xml.Unmarshal(post(t, admin, amtM.SetupAndConfigurationService.Unprovision(1)), &un); err != nil {
		t.Fatal(err)
	}
	if rv := un.Body.Unprovision_OUTPUT.ReturnValue; rv != 0 {
		t.Fatalf("Unprovision: %d", rv)
	}
	if st, _ := fx.dev.State(); st != device.InProvisioning {
		t.Fatalf("after unprovision: %s", st)
	}
}

func TestRemoteConfigurationRefusesBadChains(t *testing.T) {
	fx := start(t, true, true, nil)
	amtM := amt.NewMessages()
	noOID := certgen.Leaf("prov.example.com")
	noOID.UnknownEKU = nil
	bad, err := certgen.Build(noOID, certgen.CA("Issuing CA"), certgen.CA("Root CA"))
	if err != nil {
		t.Fatal(err)
	}
	// Same keys as the trusted chain's root? No: pooled keys are shared, but
	// the root certificate differs, so also check a chain for another domain.
	otherDomain, err := certgen.Build(certgen.Leaf("prov.other.com"), certgen.CA("Issuing CA"), certgen.CA("Root CA"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cert *tls.Certificate
	}{
		{"no client certificate", nil},
		{"leaf without Intel OID or OU", func() *tls.Certificate { c := bad.TLSCertificate(); return &c }()},
		{"untrusted root, other domain", func() *tls.Certificate { c := otherDomain.TLSCertificate(); return &c }()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := fx.client("admin", "", tc.cert).Post(amtM.GeneralSettings.Get()); err == nil {
				t.Fatal("request accepted")
			}
			if st := fx.dev.Status(); !strings.Contains(st.LastError, "refused") && tc.cert != nil {
				t.Fatalf("last error %q", st.LastError)
			}
		})
	}
}

func TestRCFGDigestWithDefaultPassword(t *testing.T) {
	fx := start(t, true, true, func(c *device.Config) { c.RCFGDigest = true })
	cert := fx.chain.TLSCertificate()
	amtM := amt.NewMessages()
	if _, err := fx.client("admin", "", &cert).Post(amtM.GeneralSettings.Get()); err == nil {
		t.Fatal("no digest accepted although the device asks for it")
	}
	if _, err := fx.client("admin", "admin", &cert).Post(amtM.GeneralSettings.Get()); err != nil {
		t.Fatalf("admin/admin refused: %v", err)
	}
}

func signNonces(t *testing.T, key crypto.Signer, fwNonceB64 string, mc []byte) string {
	t.Helper()
	fw, err := base64.StdEncoding.DecodeString(fwNonceB64)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(append(fw, mc...))
	sig, err := key.Sign(rand.Reader, sum[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

func injectChain(t *testing.T, c *gwsman.Client, chain *certgen.Chain) {
	t.Helper()
	hbs := ips.NewMessages().HostBasedSetupService
	for i, x := range chain.Certs {
		msg := hbs.AddNextCertInChain(base64.StdEncoding.EncodeToString(x.Raw), i == 0, i == len(chain.Certs)-1)
		if rv := returnValue(t, c, msg); rv != 0 {
			t.Fatalf("AddNextCertInChain %d: %d", i, rv)
		}
	}
}

func readHBS(t *testing.T, c *gwsman.Client) hostbasedsetup.HostBasedSetupService {
	t.Helper()
	var r hostbasedsetup.Response
	if err := xml.Unmarshal(post(t, c, ips.NewMessages().HostBasedSetupService.Get()), &r); err != nil {
		t.Fatal(err)
	}
	return r.Body.IPS_HostBasedSetupService
}

// Host-based ACM (§3.3) through the local (LMS) endpoint as $$OsAdmin.
func TestHostBasedAdminSetupWithGoWsmanMessages(t *testing.T) {
	mc := make([]byte, 20)
	_, _ = rand.Read(mc)
	mcB64 := base64.StdEncoding.EncodeToString(mc)
	for _, tc := range []struct {
		name string
		sign func(fx *fixture, nonce string) string
		want int
	}{
		{"good signature", func(fx *fixture, n string) string { return signNonces(t, fx.chain.Keys[0], n, mc) }, 0},
		{"wrong nonce", func(fx *fixture, n string) string {
			return signNonces(t, fx.chain.Keys[0], base64.StdEncoding.EncodeToString(make([]byte, 20)), mc)
		}, device.HBSAuthFailed},
		{"wrong key", func(fx *fixture, n string) string { return signNonces(t, fx.chain.Keys[1], n, mc) }, device.HBSAuthFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := start(t, false, false, nil)
			c := fx.client(device.LocalUser, fx.dev.LocalPassword(), nil)
			var gs general.Response
			if err := xml.Unmarshal(post(t, c, amt.NewMessages().GeneralSettings.Get()), &gs); err != nil {
				t.Fatal(err)
			}
			realm := gs.Body.AMTGeneralSettings.DigestRealm
			if s := readHBS(t, c); s.CurrentControlMode != 0 || s.CertChainStatus != 0 {
				t.Fatalf("fresh device: %+v", s)
			}
			injectChain(t, c, fx.chain)
			s := readHBS(t, c)
			if s.CertChainStatus != device.ChainComplete {
				t.Fatalf("CertChainStatus %d", s.CertChainStatus)
			}
			msg := ips.NewMessages().HostBasedSetupService.AdminSetup(hostbasedsetup.AdminPassEncryptionTypeHTTPDigestMD5A1,
				realm, newAdmin, mcB64, hostbasedsetup.SigningAlgorithmRSASHA2256, tc.sign(fx, s.ConfigurationNonce))
			var out hostbasedsetup.Response
			if err := xml.Unmarshal(post(t, c, msg), &out); err != nil {
				t.Fatal(err)
			}
			if rv := out.Body.AdminSetup_OUTPUT.ReturnValue; rv != tc.want {
				t.Fatalf("AdminSetup = %d, want %d", rv, tc.want)
			}
			if tc.want != 0 {
				return
			}
			if s := readHBS(t, c); s.CurrentControlMode != 2 {
				t.Fatalf("CurrentControlMode %d", s.CurrentControlMode)
			}
			admin := fx.client("admin", newAdmin, nil)
			if rv := returnValue(t, admin, amt.NewMessages().SetupAndConfigurationService.SetMEBXPassword(newMEBx)); rv != 0 {
				t.Fatalf("SetMEBxPassword after AdminSetup: %d", rv)
			}
		})
	}
}

func TestHostBasedCCMAndUpgrade(t *testing.T) {
	fx := start(t, false, false, nil)
	c := fx.client(device.LocalUser, fx.dev.LocalPassword(), nil)
	hbs := ips.NewMessages().HostBasedSetupService
	realm := fx.dev.ReportedRealm()
	if rv := returnValue(t, c, hbs.Setup(hostbasedsetup.AdminPassEncryptionTypeHTTPDigestMD5A1, realm, newAdmin)); rv != 0 {
		t.Fatalf("Setup: %d", rv)
	}
	if s := readHBS(t, c); s.CurrentControlMode != 1 {
		t.Fatalf("mode after Setup %d", s.CurrentControlMode)
	}
	injectChain(t, c, fx.chain)
	mc := make([]byte, 20)
	s := readHBS(t, c)
	msg := hbs.UpgradeClientToAdmin(base64.StdEncoding.EncodeToString(mc), hostbasedsetup.SigningAlgorithmRSASHA2256, signNonces(t, fx.chain.Keys[0], s.ConfigurationNonce, mc))
	if rv := returnValue(t, c, msg); rv != 0 {
		t.Fatalf("UpgradeClientToAdmin: %d", rv)
	}
	if _, mode := fx.dev.State(); mode != device.ModeAdmin {
		t.Fatalf("mode %s", mode)
	}
}

func TestFaultKnobs(t *testing.T) {
	amtM := amt.NewMessages()
	prepare := func(t *testing.T, c *gwsman.Client, realm string) {
		t.Helper()
		if rv := returnValue(t, c, amtM.SetupAndConfigurationService.SetMEBXPassword(newMEBx)); rv != 0 {
			t.Fatal(rv)
		}
		if rv := returnValue(t, c, amtM.AuthorizationService.SetAdminACLEntryEx("admin", md5b64(realm, newAdmin))); rv != 0 {
			t.Fatal(rv)
		}
	}
	t.Run("drop response after commit", func(t *testing.T) {
		fx := start(t, true, true, func(c *device.Config) { c.Faults.DropResponseAfterCommit = true })
		cert := fx.chain.TLSCertificate()
		c := fx.client("admin", "", &cert)
		prepare(t, c, fx.dev.Realm())
		if _, err := c.Post(amtM.SetupAndConfigurationService.CommitChanges()); err == nil {
			t.Fatal("commit answered")
		}
		if st, _ := fx.dev.State(); st != device.PostProvisioning {
			t.Fatalf("state %s: the commit must have happened", st)
		}
		if _, err := fx.client("admin", newAdmin, nil).Post(amtM.GeneralSettings.Get()); err != nil {
			t.Fatalf("new credentials after dropped response: %v", err)
		}
	})
	t.Run("reboot during activation", func(t *testing.T) {
		fx := start(t, true, true, func(c *device.Config) {
			c.Faults.RebootDuringActivation = true
			c.Faults.RebootDowntime = 300 * time.Millisecond
		})
		cert := fx.chain.TLSCertificate()
		c := fx.client("admin", "", &cert)
		prepare(t, c, fx.dev.Realm())
		if _, err := c.Post(amtM.SetupAndConfigurationService.CommitChanges()); err == nil {
			t.Fatal("commit answered")
		}
		if st, _ := fx.dev.State(); st != device.InProvisioning {
			t.Fatalf("state %s after reboot", st)
		}
		if _, err := fx.client("admin", "", &cert).Post(amtM.GeneralSettings.Get()); err == nil {
			t.Fatal("device reachable while rebooting")
		}
		time.Sleep(400 * time.Millisecond)
		c = fx.client("admin", "", &cert)
		if rv := returnValue(t, c, amtM.SetupAndConfigurationService.CommitChanges()); rv != device.PTDataMissing {
			t.Fatalf("staged settings survived the reboot: %d", rv)
		}
		prepare(t, c, fx.dev.Realm())
		if rv := returnValue(t, c, amtM.SetupAndConfigurationService.CommitChanges()); rv != 0 {
			t.Fatalf("retry after reboot: %d", rv)
		}
	})
	t.Run("reset mid-session", func(t *testing.T) {
		fx := start(t, true, true, func(c *device.Config) { c.Faults.ResetAtRequest = 2 })
		cert := fx.chain.TLSCertificate()
		c := fx.client("admin", "", &cert)
		post(t, c, amtM.GeneralSettings.Get())
		_, err := c.Post(amtM.GeneralSettings.Get())
		if err == nil || !strings.Contains(err.Error(), "reset") && !strings.Contains(err.Error(), "EOF") {
			t.Fatalf("second request: %v", err)
		}
		post(t, fx.client("admin", "", &cert), amtM.GeneralSettings.Get())
	})
	t.Run("wrong realm", func(t *testing.T) {
		fx := start(t, true, true, func(c *device.Config) { c.Faults.WrongRealm = true })
		cert := fx.chain.TLSCertificate()
		c := fx.client("admin", "", &cert)
		var gs general.Response
		if err := xml.Unmarshal(post(t, c, amtM.GeneralSettings.Get()), &gs); err != nil {
			t.Fatal(err)
		}
		prepare(t, c, gs.Body.AMTGeneralSettings.DigestRealm)
		if rv := returnValue(t, c, amtM.SetupAndConfigurationService.CommitChanges()); rv != 0 {
			t.Fatal(rv)
		}
		if _, err := fx.client("admin", newAdmin, nil).Post(amtM.GeneralSettings.Get()); err == nil {
			t.Fatal("password hashed with the reported (wrong) realm worked")
		}
	})
	t.Run("expired window", func(t *testing.T) {
		fx := start(t, true, true, func(c *device.Config) { c.Faults.WindowExpired = true })
		cert := fx.chain.TLSCertificate()
		if _, err := fx.client("admin", "", &cert).Post(amtM.GeneralSettings.Get()); err == nil {
			t.Fatal("device with a closed window answered")
		}
	})
	t.Run("slow device", func(t *testing.T) {
		fx := start(t, true, true, func(c *device.Config) { c.Faults.Slow = 200 * time.Millisecond })
		cert := fx.chain.TLSCertificate()
		began := time.Now()
		post(t, fx.client("admin", "", &cert), amtM.GeneralSettings.Get())
		if d := time.Since(began); d < 200*time.Millisecond {
			t.Fatalf("answered in %v", d)
		}
	})
	t.Run("strict element names", func(t *testing.T) {
		fx := start(t, true, true, func(c *device.Config) { c.StrictElementNames = true })
		cert := fx.chain.TLSCertificate()
		if _, err := fx.client("admin", "", &cert).Post(amtM.AuthorizationService.SetAdminACLEntryEx("admin", md5b64("x", "y"))); err == nil {
			t.Fatal("v1.8.1 element spelling accepted in strict mode")
		}
	})
}

// The wire details of §3.6: chunked SOAP 1.2 with AMT's Server header.
func TestResponseFraming(t *testing.T) {
	fx := start(t, true, true, nil)
	cert := fx.chain.TLSCertificate()
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}}}}
	resp, err := cl.Post(fx.url, gwsman.ContentType, strings.NewReader(amt.NewMessages().GeneralSettings.Get()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("status %d, transfer encoding %v", resp.StatusCode, resp.TransferEncoding)
	}
	if got := resp.Header.Get("Server"); got != "Intel(R) Active Management Technology 16.1.27.2176" {
		t.Fatalf("Server %q", got)
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/soap+xml") {
		t.Fatalf("Content-Type %q", resp.Header.Get("Content-Type"))
	}
	bad, err := cl.Post(fx.url, gwsman.ContentType, strings.NewReader(strings.Replace(amt.NewMessages().GeneralSettings.Get(), "AMT_GeneralSettings", "AMT_NoSuchClass", 1)))
	if err != nil {
		t.Fatal(err)
	}
	bad.Body.Close()
	if bad.StatusCode != 400 {
		t.Fatalf("unknown class: HTTP %d", bad.StatusCode)
	}
}

// Old firmware speaks TLS 1.0 with RSA key exchange only.
func TestLegacyProfileTLS(t *testing.T) {
	p, _ := firmware.Lookup("2.6")
	chain := chainFor(t, "prov.example.com")
	fx := start(t, true, true, func(c *device.Config) {
		c.Profile = p
		c.CustomHashes = []device.CustomHash{{Name: "r", Alg: hello.SHA1, Sum: firmware.Digest(hello.SHA1, chain.Root().Raw)}}
	})
	cert := chain.TLSCertificate()
	host := strings.TrimSuffix(strings.TrimPrefix(fx.url, "https://"), "/wsman")
	modern := &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c, err := tls.Dial("tcp", host, modern); err == nil {
		c.Close()
		t.Fatal("2.6 profile negotiated TLS 1.2")
	}
	old := &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS10,
		CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA}}
	c, err := tls.Dial("tcp", host, old)
	if err != nil {
		t.Fatalf("TLS 1.0 RSA handshake: %v", err)
	}
	defer c.Close()
	if st := c.ConnectionState(); st.Version != tls.VersionTLS10 || st.CipherSuite != tls.TLS_RSA_WITH_AES_128_CBC_SHA {
		t.Fatalf("negotiated %x/%x", st.Version, st.CipherSuite)
	}
}

func TestRemoteHTTPOnlyAfterProvisioning(t *testing.T) {
	fx := start(t, true, true, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeRemoteHTTP(ctx, fx.dev, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	url := "http://" + ln.Addr().String() + "/wsman"
	get := amt.NewMessages().GeneralSettings.Get()
	if _, err := gwsman.NewClient(url, "admin", "admin", true).Post(get); err == nil {
		t.Fatal("16992 answered before provisioning")
	}
	if rv := fx.dev.SetMEBxPassword(newMEBx); rv != 0 {
		t.Fatal(rv)
	}
	if rv := fx.dev.CommitChanges(); rv != 0 {
		t.Fatal(rv)
	}
	// No SetAdminAclEntryEx: the admin password is the new MEBx password.
	if _, err := gwsman.NewClient(url, "admin", newMEBx, true).Post(get); err != nil {
		t.Fatalf("16992 after provisioning: %v", err)
	}
}
