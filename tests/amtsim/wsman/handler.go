// Package wsman is the simulated device's WS-Management endpoint: HTTP digest
// as AMT asks for it, SOAP 1.2 envelopes, chunked replies with AMT's Server
// header, and the TLS listener on 16993 that checks provisioning chains.
package wsman

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/branchbox/branchbox/tests/amtsim/device"
)

const maxRequest = 1 << 20

// Handler serves /wsman for one device.
type Handler struct {
	dev       *device.Device
	transport device.Transport
	log       *slog.Logger
	auth      *digestAuth
	msgID     atomic.Uint64

	mu   sync.Mutex
	enum map[string]string // enumeration context -> class
}

// NewHandler returns the WS-Man endpoint of dev on the given transport.
func NewHandler(dev *device.Device, t device.Transport) *Handler {
	return &Handler{dev: dev, transport: t, log: dev.Log(), auth: newDigestAuth(), enum: map[string]string{}}
}

type connCounterKey struct{}

// ConnContext gives every connection a request counter (for the
// reset-mid-session fault); install it as http.Server.ConnContext.
func ConnContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connCounterKey{}, new(atomic.Int64))
}

func requestNumber(ctx context.Context) int {
	if c, ok := ctx.Value(connCounterKey{}).(*atomic.Int64); ok {
		return int(c.Add(1))
	}
	return 0
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := requestNumber(r.Context())
	if d := h.dev.Faults().Slow; d > 0 {
		time.Sleep(d)
	}
	if r.URL.Path != "/wsman" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if h.dev.ConsumeReset(n) {
		h.log.Warn("fault: TCP reset mid-session", "request", n)
		abort(w, true)
		return
	}
	user, ok := h.authenticate(w, r)
	if !ok {
		return
	}
	env, err := parseXML(io.LimitReader(r.Body, maxRequest))
	if err != nil {
		h.log.Warn("WS-Man request does not parse", "err", err)
		h.write(w, http.StatusBadRequest, envelope(actFault, "", "", h.nextID(), faultBody("c:SchemaValidationError", err.Error())))
		return
	}
	req, err := parseRequest(env)
	if err != nil {
		h.log.Warn("WS-Man request refused", "err", err)
		h.write(w, http.StatusBadRequest, envelope(actFault, "", "", h.nextID(), faultBody("b:InvalidMessageInformationHeader", err.Error())))
		return
	}
	// The remote-configuration session (its client chain passed the rules
	// in the handshake) may configure the device before its commit, as
	// MeshCentral's bare-metal flow does with TLS.
	rcfg := user == "" && h.transport == device.Remote && h.dev.NeedsClientChain()
	if adminOnly(req.class) && user != device.AdminUser && !rcfg {
		// Configuration classes belong to the admin account; before
		// activation (no digest, or $$OsAdmin) nobody holds it.
		who := user
		if who == "" {
			who = "a provisioning-chain session without digest"
		}
		h.log.Warn("WS-Man access denied", "class", req.class, "user", who)
		h.write(w, http.StatusBadRequest, envelope(actFault, req.messageID, req.resourceURI, h.nextID(),
			faultBody("c:AccessDenied", req.class+" needs the admin account of an activated device, not "+who)))
		return
	}
	h.serve(w, req)
}

// authenticate applies the device's current credential policy and returns
// the digest user ("" when the TLS client chain alone authenticated).
func (h *Handler) authenticate(w http.ResponseWriter, r *http.Request) (string, bool) {
	required, users := h.dev.Credentials(h.transport)
	header := r.Header.Get("Authorization")
	if header == "" && !required {
		return "", true
	}
	realm := h.dev.Realm()
	if header != "" {
		user, err := h.auth.verify(header, r.Method, realm, users)
		switch {
		case err == nil:
			h.log.Debug("digest authentication", "user", user)
			return user, true
		case errors.Is(err, errNoChallenge):
			// Clients such as go-wsman-messages answer a challenge they have
			// not received yet; that is a normal first round trip.
			h.log.Debug("digest authentication before a challenge")
		default:
			h.log.Warn("digest authentication failed", "reason", err.Error())
		}
	}
	h.header(w)
	w.Header().Set("WWW-Authenticate", h.auth.challenge(realm))
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = io.WriteString(w, "<html><head></head><body>Unauthorized</body></html>")
	return "", false
}

func (h *Handler) nextID() string {
	return fmt.Sprintf("uuid:00000000-8086-8086-8086-%012X", h.msgID.Add(1))
}

func (h *Handler) header(w http.ResponseWriter) {
	w.Header().Set("Server", h.dev.Profile().ServerHeader())
}

// write sends a SOAP reply in two chunks, as AMT's stack answers chunked.
func (h *Handler) write(w http.ResponseWriter, status int, body string) {
	h.header(w)
	w.Header().Set("Content-Type", "application/soap+xml; charset=UTF-8")
	w.WriteHeader(status)
	half := len(body) / 2
	_, _ = io.WriteString(w, body[:half])
	if fl, ok := w.(http.Flusher); ok {
		fl.Flush()
	}
	_, _ = io.WriteString(w, body[half:])
}

// abort closes the connection without a response; with reset it sends a TCP
// RST instead of a FIN.
func abort(w http.ResponseWriter, reset bool) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	raw := conn
	if tc, ok := conn.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	if tcp, ok := raw.(*net.TCPConn); ok && reset {
		_ = tcp.SetLinger(0)
		_ = tcp.Close()
		return
	}
	_ = raw.Close()
}

// reply is what a dispatched request produced.
type reply struct {
	status int
	action string
	body   string
	close  bool // the device restarts its network stack after answering
}

func (h *Handler) fault(subcode, reason string) reply {
	h.log.Warn("WS-Man fault", "subcode", subcode, "reason", reason)
	return reply{status: http.StatusBadRequest, action: actFault, body: faultBody(subcode, reason)}
}

func (h *Handler) serve(w http.ResponseWriter, req *request) {
	var rep reply
	switch req.action {
	case actGet:
		rep = h.get(req)
	case actEnumerate:
		rep = h.enumerate(req)
	case actPull:
		rep = h.pull(req)
	case actPut:
		rep = h.put(req)
	case actCreate:
		rep = h.create(req)
	default:
		method, ok := strings.CutPrefix(req.action, req.resourceURI+"/")
		if !ok {
			rep = h.fault("b:ActionNotSupported", fmt.Sprintf("action %q does not belong to %q", req.action, req.resourceURI))
			break
		}
		if activation[req.class+"."+method] && h.dev.ConsumeReboot() {
			h.log.Warn("fault: reboot during activation", "method", method)
			h.dev.Reboot()
			abort(w, true)
			return
		}
		rep = h.invoke(req, method)
		if rep.status == http.StatusOK && activation[req.class+"."+method] && h.dev.Faults().DropResponseAfterCommit && h.committed() {
			h.log.Warn("fault: response dropped after commit", "method", method)
			abort(w, false)
			return
		}
	}
	resp := envelope(rep.action, req.messageID, req.resourceURI, h.nextID(), rep.body)
	if rep.close {
		w.Header().Set("Connection", "close")
	}
	h.write(w, rep.status, resp)
}

// activation lists the calls after which a real device commits its state.
var activation = map[string]bool{
	"AMT_SetupAndConfigurationService.CommitChanges": true,
	"IPS_HostBasedSetupService.AdminSetup":           true,
	"IPS_HostBasedSetupService.Setup":                true,
	"IPS_HostBasedSetupService.UpgradeClientToAdmin": true,
}

func (h *Handler) committed() bool {
	st, _ := h.dev.State()
	return st == device.PostProvisioning
}

// errNoClass: the device has no such class.
var errNoClass = errors.New("no such resource")

// instances returns the instances of a readable class.
func (h *Handler) instances(class string) ([]instance, error) {
	if list, err := h.featureInstances(class); !errors.Is(err, errNoClass) {
		return list, err
	}
	list, ok := h.setupInstances(class)
	if !ok {
		return nil, errNoClass
	}
	return list, nil
}

// setupInstances returns the instances of the classes activation reads.
func (h *Handler) setupInstances(class string) ([]instance, bool) {
	p := h.dev.Profile()
	switch class {
	case "AMT_GeneralSettings":
		gs := h.dev.GetGeneralSettings()
		return []instance{{class: class, fields: []field{
			f("AMTNetworkEnabled", 1), f("DDNSPeriodicUpdateInterval", 1440), f("DDNSTTL", 900),
			f("DDNSUpdateByDHCPServerEnabled", "true"), f("DDNSUpdateEnabled", "false"),
			f("DHCPv6ConfigurationTimeout", 0), f("DigestRealm", gs.DigestRealm), f("DomainName", gs.DomainName),
			f("ElementName", "Intel(r) AMT: General Settings"), f("HostName", ""), f("HostOSFQDN", ""),
			f("IdleWakeTimeout", 65535), f("InstanceID", "Intel(r) AMT: General Settings"),
			f("NetworkInterfaceEnabled", "true"), f("PingResponseEnabled", "true"), f("PowerSource", 0),
			f("PreferredAddressFamily", 0), f("PresenceNotificationInterval", 0), f("PrivacyLevel", 0),
			f("RmcpPingResponseEnabled", "true"), f("SharedFQDN", "true"), f("WsmanOnlyMode", "false"),
		}}}, true
	case "CIM_SoftwareIdentity":
		var out []instance
		for _, v := range p.CodeVersions() {
			out = append(out, instance{class: class, fields: []field{
				f("InstanceID", v.Name), f("IsEntity", "true"), f("VersionString", v.Value),
			}})
		}
		return out, true
	case "AMT_SetupAndConfigurationService":
		s := h.dev.GetSetupService()
		fields := []field{
			f("CreationClassName", class), f("ElementName", "Intel(r) AMT Setup and Configuration Service"),
			f("EnabledState", 5), f("Name", "Intel(r) AMT Setup and Configuration Service"), f("PasswordModel", 1),
			f("ProvisioningMode", s.ProvisioningMode),
		}
		if s.OTPBase64 != "" {
			fields = append(fields, f("ProvisioningServerOTP", s.OTPBase64))
		}
		fields = append(fields, f("ProvisioningState", int(s.ProvisioningState)), f("RequestedState", 12),
			f("SystemCreationClassName", "CIM_ComputerSystem"), f("SystemName", "Intel(r) AMT"),
			f("ZeroTouchConfigurationEnabled", s.ZeroTouchEnabled))
		return []instance{{class: class, fields: fields}}, true
	case "IPS_HostBasedSetupService":
		if !p.HostBasedSetup {
			return nil, false
		}
		s := h.dev.GetHostBasedSetup()
		modes := field{name: "AllowedControlModes"}
		for _, m := range s.AllowedControlModes {
			modes.values = append(modes.values, strconv.Itoa(int(m)))
		}
		return []instance{{class: class, fields: []field{
			modes, f("CertChainStatus", s.CertChainStatus), f("ConfigurationNonce", s.ConfigurationNonce),
			f("CreationClassName", class), f("CurrentControlMode", int(s.CurrentControlMode)),
			f("ElementName", "Intel(r) AMT Host Based Setup Service"), f("Name", "Intel(r) AMT Host Based Setup Service"),
			f("SystemCreationClassName", "CIM_ComputerSystem"), f("SystemName", "Intel(r) AMT"),
		}}}, true
	case "AMT_TimeSynchronizationService":
		return []instance{{class: class, fields: []field{
			f("CreationClassName", class), f("ElementName", "Intel(r) AMT Time Synchronization Service"),
			f("EnabledState", 5), f("Name", "Intel(r) AMT Time Synchronization Service"),
			f("SystemCreationClassName", "CIM_ComputerSystem"), f("SystemName", "Intel(r) AMT"),
		}}}, true
	}
	return nil, false
}

func (h *Handler) get(req *request) reply {
	in, rep, ok := h.selected(req)
	if !ok {
		return rep
	}
	return reply{status: http.StatusOK, action: actGet + "Response", body: in.render("g")}
}

// selected finds the instance a Get or Put addresses: the one matching
// every selector, else the first. A selector-less Get of
// CIM_SoftwareIdentity yields the AMT entry, the one provisioning servers
// read the version from.
func (h *Handler) selected(req *request) (instance, reply, bool) {
	list, err := h.instances(req.class)
	if err != nil {
		return instance{}, h.classFault(req, err), false
	}
	if len(req.selectors) == 0 && req.class == "CIM_SoftwareIdentity" {
		req.selectors = map[string]string{"InstanceID": "AMT"}
	}
	for _, in := range list {
		match := true
		for name, v := range req.selectors {
			match = match && in.value(name) == v
		}
		if match {
			return in, reply{}, true
		}
	}
	if len(req.selectors) > 0 {
		return instance{}, h.fault("c:InvalidSelectors", fmt.Sprintf("no %s matches the selectors %v", req.class, req.selectors)), false
	}
	return instance{}, h.fault("b:DestinationUnreachable", "no instance of "+req.class), false
}

// classFault answers a failed read of a class.
func (h *Handler) classFault(req *request, err error) reply {
	if errors.Is(err, errNoClass) {
		return h.fault("b:DestinationUnreachable", "no such resource: "+req.resourceURI)
	}
	return h.deviceFault(err)
}

func (h *Handler) enumerate(req *request) reply {
	if _, err := h.instances(req.class); err != nil {
		return h.classFault(req, err)
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	ctx := strings.ToUpper(hex.EncodeToString(b))
	h.mu.Lock()
	h.enum[ctx] = req.class
	h.mu.Unlock()
	return reply{status: http.StatusOK, action: actEnumerate + "Response",
		body: fmt.Sprintf(`<g:EnumerateResponse xmlns:g="%s"><g:EnumerationContext>%s</g:EnumerationContext></g:EnumerateResponse>`, nsEnum, ctx)}
}

func (h *Handler) pull(req *request) reply {
	ctx := req.input.child("EnumerationContext").text()
	h.mu.Lock()
	class, ok := h.enum[ctx]
	delete(h.enum, ctx)
	h.mu.Unlock()
	if !ok || class != req.class {
		return h.fault("g:InvalidEnumerationContext", "unknown enumeration context")
	}
	list, err := h.instances(class)
	if err != nil {
		return h.classFault(req, err)
	}
	var items strings.Builder
	for _, in := range list {
		items.WriteString(in.render("h"))
	}
	return reply{status: http.StatusOK, action: actPull + "Response",
		body: fmt.Sprintf(`<g:PullResponse xmlns:g="%s"><g:Items>%s</g:Items><g:EndOfSequence></g:EndOfSequence></g:PullResponse>`, nsEnum, items.String())}
}

// params reads a method's input element after checking its name and namespace.
type params struct{ n *node }

func (p params) str(name string) (string, bool) {
	c := p.n.child(name)
	return c.text(), c != nil
}

func (p params) num(name string) (int64, bool) {
	s, ok := p.str(name)
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil
}

func (p params) boolean(name string) (bool, bool) {
	s, ok := p.str(name)
	switch strings.ToLower(s) {
	case "true", "1":
		return true, ok
	case "false", "0":
		return false, ok
	}
	return false, false
}

func (h *Handler) input(req *request, method string) (params, error) {
	want := method + "_INPUT"
	in := req.input
	if in == nil {
		return params{}, fmt.Errorf("%s: empty body, want %s", method, want)
	}
	if in.Name != want {
		// go-wsman-messages v1.8.1 spells this one element with "ACL"
		// (amt-protocol.md §3.6).
		if method == "SetAdminAclEntryEx" && in.Name == "SetAdminACLEntryEx_INPUT" && !h.dev.StrictElementNames() {
			h.log.Warn("accepting non-firmware element name", "got", in.Name, "firmware_name", want)
		} else {
			return params{}, fmt.Errorf("%s: body element %q, want %q", method, in.Name, want)
		}
	}
	if ns := classNamespace(req.class); in.Space != ns {
		return params{}, fmt.Errorf("%s: input namespace %q, want %q", method, in.Space, ns)
	}
	return params{in}, nil
}

// invoke runs a custom method.
func (h *Handler) invoke(req *request, method string) reply {
	key := req.class + "." + method
	spec, ok := methods[key]
	if !ok {
		spec, ok = featureMethods[key]
	}
	if !ok || (req.class == "IPS_HostBasedSetupService" && !h.dev.Profile().HostBasedSetup) {
		return h.fault("b:ActionNotSupported", "method not supported: "+key)
	}
	p, err := h.input(req, method)
	if err != nil {
		return h.fault("c:SchemaValidationError", err.Error())
	}
	rv, extra, err := spec(h.dev, p)
	if errors.Is(err, device.ErrNotActivated) {
		return h.deviceFault(err)
	}
	if err != nil {
		return h.fault("c:SchemaValidationError", fmt.Sprintf("%s: %v", method, err))
	}
	h.log.Info("WS-Man call", "method", key, "return_value", rv)
	rep := reply{status: http.StatusOK, action: req.action + "Response", body: outputBody(req.class, method, rv, extra...)}
	rep.close = rv == 0 && activation[key]
	return rep
}

type methodFunc func(d *device.Device, p params) (int, []field, error)

func missing(names ...string) error {
	return fmt.Errorf("missing or malformed %s", strings.Join(names, ", "))
}

var methods = map[string]methodFunc{
	"AMT_SetupAndConfigurationService.CommitChanges": func(d *device.Device, _ params) (int, []field, error) {
		return d.CommitChanges(), nil, nil
	},
	"AMT_SetupAndConfigurationService.Unprovision": func(d *device.Device, p params) (int, []field, error) {
		mode, ok := p.num("ProvisioningMode")
		if !ok {
			return 0, nil, missing("ProvisioningMode")
		}
		return d.Unprovision(int(mode)), nil, nil
	},
	"AMT_SetupAndConfigurationService.SetMEBxPassword": func(d *device.Device, p params) (int, []field, error) {
		pw, ok := p.str("Password")
		if !ok {
			return 0, nil, missing("Password")
		}
		return d.SetMEBxPassword(pw), nil, nil
	},
	"AMT_SetupAndConfigurationService.ExtendProvisioningPeriod": func(d *device.Device, p params) (int, []field, error) {
		hours, ok := p.num("Duration")
		if !ok {
			return 0, nil, missing("Duration")
		}
		return d.ExtendProvisioningPeriod(int(hours)), nil, nil
	},
	"AMT_AuthorizationService.SetAdminAclEntryEx": func(d *device.Device, p params) (int, []field, error) {
		user, ok1 := p.str("Username")
		pw, ok2 := p.str("DigestPassword")
		if !ok1 || !ok2 {
			return 0, nil, missing("Username", "DigestPassword")
		}
		return d.SetAdminAclEntryEx(user, pw), nil, nil
	},
	"AMT_TimeSynchronizationService.GetLowAccuracyTimeSynch": func(d *device.Device, _ params) (int, []field, error) {
		ta0, rv := d.GetLowAccuracyTimeSynch()
		return rv, []field{f("Ta0", ta0)}, nil
	},
	"AMT_TimeSynchronizationService.SetHighAccuracyTimeSynch": func(d *device.Device, p params) (int, []field, error) {
		ta0, ok1 := p.num("Ta0")
		tm1, ok2 := p.num("Tm1")
		tm2, ok3 := p.num("Tm2")
		if !ok1 || !ok2 || !ok3 {
			return 0, nil, missing("Ta0", "Tm1", "Tm2")
		}
		return d.SetHighAccuracyTimeSynch(ta0, tm1, tm2), nil, nil
	},
	"IPS_HostBasedSetupService.AddNextCertInChain": func(d *device.Device, p params) (int, []field, error) {
		cert, ok1 := p.str("NextCertificate")
		leaf, ok2 := p.boolean("IsLeafCertificate")
		root, ok3 := p.boolean("IsRootCertificate")
		if !ok1 || !ok2 || !ok3 {
			return 0, nil, missing("NextCertificate", "IsLeafCertificate", "IsRootCertificate")
		}
		return d.AddNextCertInChain(cert, leaf, root), nil, nil
	},
	"IPS_HostBasedSetupService.AdminSetup": func(d *device.Device, p params) (int, []field, error) {
		enc, ok1 := p.num("NetAdminPassEncryptionType")
		pw, ok2 := p.str("NetworkAdminPassword")
		mc, ok3 := p.str("McNonce")
		alg, ok4 := p.num("SigningAlgorithm")
		sig, ok5 := p.str("DigitalSignature")
		if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 {
			return 0, nil, missing("NetAdminPassEncryptionType", "NetworkAdminPassword", "McNonce", "SigningAlgorithm", "DigitalSignature")
		}
		return d.AdminSetup(int(enc), pw, mc, int(alg), sig), nil, nil
	},
	"IPS_HostBasedSetupService.Setup": func(d *device.Device, p params) (int, []field, error) {
		enc, ok1 := p.num("NetAdminPassEncryptionType")
		pw, ok2 := p.str("NetworkAdminPassword")
		if !ok1 || !ok2 {
			return 0, nil, missing("NetAdminPassEncryptionType", "NetworkAdminPassword")
		}
		return d.Setup(int(enc), pw), nil, nil
	},
	"IPS_HostBasedSetupService.UpgradeClientToAdmin": func(d *device.Device, p params) (int, []field, error) {
		mc, ok1 := p.str("McNonce")
		alg, ok2 := p.num("SigningAlgorithm")
		sig, ok3 := p.str("DigitalSignature")
		if !ok1 || !ok2 || !ok3 {
			return 0, nil, missing("McNonce", "SigningAlgorithm", "DigitalSignature")
		}
		return d.UpgradeClientToAdmin(mc, int(alg), sig), nil, nil
	},
}
