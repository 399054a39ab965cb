// Package fakeamt is a minimal AMT device in setup mode for the
// provisioner's own unit tests: WS-Man over mutual TLS with digest auth
// and the calls of the bare-metal sequence. The full firmware model lives
// in tests/amtsim; this one only has to be small and controllable.
package fakeamt

import (
	"crypto/md5"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/branchbox/branchbox/provisioner/wsman"
)

// Device is one fake AMT. Tests set the exported fields before starting
// it and read them under Lock afterwards.
type Device struct {
	mu           sync.Mutex
	delay        time.Duration
	Realm        string
	FactoryPass  string // accepted for "admin" before commit
	State        string
	OTP          string // as the agent set it, plain
	Version      string
	AdminHA1     string // hex, after SetAdminAclEntryEx
	pendingHA1   string
	MEBx         string
	ClockOffset  int64
	DropCommit   bool // commit state, then drop the connection
	FailStarts   int  // drop this many requests before answering
	Actions      []string
	ACLBody      string
	TimeSet      bool
	ExtendCalled string
	// Features as the provisioner left them.
	Redirection string // RequestedState of AMT_RedirectionService
	Listener    string
	KVM         string // RequestedState of CIM_KVMRedirectionSAP
	OptIn       string
}

// New returns a factory-fresh device: setup mode, admin/admin.
func New() *Device {
	return &Device{Realm: "Digest:0123456789ABCDEF0123456789ABCDEF", FactoryPass: "admin", State: "1", Version: "16.1.25"}
}

const nonce = "n0nce"

// Lock guards the exported fields while the device runs.
func (d *Device) Lock() { d.mu.Lock() }

// Unlock releases Lock.
func (d *Device) Unlock() { d.mu.Unlock() }

// Start serves the device with TLS on a free loopback port.
func (d *Device) Start(t testing.TB) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(d.serve))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// Serve serves the device on ln (which the caller made, e.g. on a chosen
// loopback address) until the test ends.
func (d *Device) Serve(t testing.TB, ln net.Listener) {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(d.serve))
	srv.Listener.Close()
	srv.Listener = ln
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
}

// Count is how many times class/method was called.
func (d *Device) Count(call string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, a := range d.Actions {
		if a == call {
			n++
		}
	}
	return n
}

// Delay slows every answer, to keep a session in flight.
func (d *Device) SetDelay(delay time.Duration) {
	d.mu.Lock()
	d.delay = delay
	d.mu.Unlock()
}

func (d *Device) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	d.mu.Lock()
	delay := d.delay
	d.mu.Unlock()
	time.Sleep(delay)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.FailStarts > 0 {
		d.FailStarts--
		hijackClose(w)
		return
	}
	ha1 := MD5Hex("admin:" + d.Realm + ":" + d.FactoryPass)
	if d.State == "2" {
		ha1 = d.AdminHA1
	}
	if !digestOK(r.Header.Get("Authorization"), ha1) {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Digest realm="%s", nonce="%s", stale="false", qop="auth"`, d.Realm, nonce))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	doc, err := wsman.ParseXML(body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	action := doc.Value("Action")
	method := action[strings.LastIndex(action, "/")+1:]
	resource := doc.Value("ResourceURI")
	class := resource[strings.LastIndex(resource, "/")+1:]
	d.Actions = append(d.Actions, class+"/"+method)
	w.Header().Set("Server", "Intel(R) Active Management Technology "+d.Version)
	out := ""
	switch class + "/" + method {
	case "AMT_GeneralSettings/Get":
		out = "<g:AMT_GeneralSettings><g:DigestRealm>" + d.Realm + "</g:DigestRealm></g:AMT_GeneralSettings>"
	case "CIM_SoftwareIdentity/Enumerate":
		out = "<g:EnumerateResponse><g:EnumerationContext>ctx-1</g:EnumerationContext></g:EnumerateResponse>"
	case "CIM_SoftwareIdentity/Pull":
		out = "<g:PullResponse><g:Items><g:CIM_SoftwareIdentity><g:InstanceID>Flash</g:InstanceID><g:VersionString>9.9.9</g:VersionString></g:CIM_SoftwareIdentity>" +
			"<g:CIM_SoftwareIdentity><g:InstanceID>AMT</g:InstanceID><g:VersionString>" + d.Version + "</g:VersionString></g:CIM_SoftwareIdentity></g:Items></g:PullResponse>"
	case "AMT_SetupAndConfigurationService/Get":
		otp := ""
		if d.OTP != "" {
			otp = base64.StdEncoding.EncodeToString([]byte(d.OTP))
		}
		out = "<g:AMT_SetupAndConfigurationService><g:ProvisioningState>" + d.State + "</g:ProvisioningState><g:ProvisioningServerOTP>" + otp + "</g:ProvisioningServerOTP></g:AMT_SetupAndConfigurationService>"
	case "AMT_SetupAndConfigurationService/ExtendProvisioningPeriod":
		d.ExtendCalled = doc.Value("Duration")
		out = ret(method, 0)
	case "AMT_SetupAndConfigurationService/SetMEBxPassword":
		d.MEBx = doc.Value("Password")
		out = ret(method, 0)
	case "AMT_AuthorizationService/SetAdminAclEntryEx":
		d.ACLBody = string(body)
		raw, _ := base64.StdEncoding.DecodeString(doc.Value("DigestPassword"))
		d.pendingHA1 = hex.EncodeToString(raw)
		out = ret(method, 0)
	case "AMT_TimeSynchronizationService/GetLowAccuracyTimeSynch":
		out = fmt.Sprintf("<g:GetLowAccuracyTimeSynch_OUTPUT><g:Ta0>%d</g:Ta0><g:ReturnValue>0</g:ReturnValue></g:GetLowAccuracyTimeSynch_OUTPUT>", 1700000000+d.ClockOffset)
	case "AMT_TimeSynchronizationService/SetHighAccuracyTimeSynch":
		d.TimeSet = true
		out = ret(method, 0)
	case "AMT_RedirectionService/RequestStateChange":
		d.Redirection = doc.Value("RequestedState")
		out = ret(method, 0)
	case "CIM_KVMRedirectionSAP/RequestStateChange":
		d.KVM = doc.Value("RequestedState")
		out = ret(method, 0)
	case "AMT_RedirectionService/Get", "AMT_RedirectionService/Put":
		if method == "Put" {
			d.Listener = doc.Value("ListenerEnabled")
		}
		out = "<g:AMT_RedirectionService><g:Name>Intel(r) AMT Redirection Service</g:Name><g:ListenerEnabled>" + d.Listener + "</g:ListenerEnabled></g:AMT_RedirectionService>"
	case "IPS_OptInService/Get", "IPS_OptInService/Put":
		if method == "Put" {
			d.OptIn = doc.Value("OptInRequired")
		}
		out = "<g:IPS_OptInService><g:Name>Intel(r) AMT OptIn Service</g:Name><g:OptInRequired>" + d.OptIn + "</g:OptInRequired></g:IPS_OptInService>"
	case "AMT_SetupAndConfigurationService/CommitChanges":
		if d.MEBx == "" {
			out = ret(method, 2057)
			break
		}
		d.State, d.AdminHA1 = "2", d.pendingHA1
		if d.DropCommit {
			hijackClose(w)
			return
		}
		out = ret(method, 0)
	default:
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `<a:Envelope xmlns:a="http://www.w3.org/2003/05/soap-envelope"><a:Body><a:Fault><a:Reason><a:Text>unsupported `+class+"/"+method+`</a:Text></a:Reason></a:Fault></a:Body></a:Envelope>`)
		return
	}
	io.WriteString(w, `<a:Envelope xmlns:a="http://www.w3.org/2003/05/soap-envelope" xmlns:g="urn:g"><a:Header/><a:Body>`+out+`</a:Body></a:Envelope>`)
}

func ret(method string, v int) string {
	return fmt.Sprintf("<g:%s_OUTPUT><g:ReturnValue>%d</g:ReturnValue></g:%s_OUTPUT>", method, v, method)
}

func hijackClose(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			c.Close()
		}
	}
}

// MD5Hex is the hex MD5 of s, as digest HA1 values are kept.
func MD5Hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

func digestOK(h, ha1 string) bool {
	if !strings.HasPrefix(h, "Digest ") {
		return false
	}
	p := map[string]string{}
	for _, kv := range strings.Split(h[7:], ", ") {
		k, v, _ := strings.Cut(kv, "=")
		p[k] = strings.Trim(v, `"`)
	}
	want := MD5Hex(ha1 + ":" + nonce + ":" + p["nc"] + ":" + p["cnonce"] + ":" + p["qop"] + ":" + MD5Hex("POST:"+p["uri"]))
	return p["username"] == "admin" && p["response"] == want
}
