package wsman

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/branchbox/branchbox/tests/amtsim/device"
)

// The configuration classes a provisioner uses after activation:
// redirection (SOL, IDER, the listener), KVM, user consent, and the
// certificate store and TLS settings.
const (
	clsRedirection = "AMT_RedirectionService"
	clsKVMSAP      = "CIM_KVMRedirectionSAP"
	clsKVMSettings = "IPS_KVMRedirectionSettingData"
	clsOptIn       = "IPS_OptInService"
	clsPKService   = "AMT_PublicKeyManagementService"
	clsKeyPair     = "AMT_PublicPrivateKeyPair"
	clsCert        = "AMT_PublicKeyCertificate"
	clsTLSContext  = "AMT_TLSCredentialContext"
	clsTLSSettings = "AMT_TLSSettingData"
	clsTLSEndpoint = "AMT_TLSProtocolEndpointCollection"
)

func adminOnly(class string) bool {
	switch class {
	case clsRedirection, clsKVMSAP, clsKVMSettings, clsOptIn, clsPKService, clsKeyPair, clsCert, clsTLSContext, clsTLSSettings:
		return true
	}
	return false
}

// serviceFields are the properties of a single-instance AMT service.
func serviceFields(class, name string, extra ...field) []field {
	return append(extra, f("CreationClassName", class), f("ElementName", name), f("Name", name),
		f("SystemCreationClassName", "CIM_ComputerSystem"), f("SystemName", "Intel(r) AMT"))
}

// featureInstances returns the instances of a configuration class, or
// errNoClass for other classes.
func (h *Handler) featureInstances(class string) (list []instance, err error) {
	d := h.dev
	one := func(fields []field, err error) ([]instance, error) {
		if err != nil {
			return nil, err
		}
		return []instance{{class: class, fields: fields}}, nil
	}
	switch class {
	case clsRedirection:
		r, err := d.GetRedirection()
		return one(serviceFields(class, "Intel(r) AMT Redirection Service",
			f("EnabledState", r.EnabledState()), f("ListenerEnabled", r.ListenerEnabled)), err)
	case clsKVMSAP:
		k, err := d.GetKVM()
		return one([]field{f("CreationClassName", class), f("ElementName", "KVM Redirection Service Access Point"),
			f("EnabledState", k.EnabledState), f("KVMProtocol", 4), f("Name", "KVM Redirection Service Access Point"),
			f("RequestedState", k.RequestedState), f("SystemCreationClassName", "CIM_ComputerSystem"), f("SystemName", "ManagedSystem")}, err)
	case clsKVMSettings:
		s, err := d.GetKVMSettings()
		return one([]field{f("DefaultScreen", s.DefaultScreen), f("ElementName", "Intel(r) KVM Redirection Settings"),
			f("EnabledByMEBx", true), f("InstanceID", "Intel(r) KVM Redirection Settings"), f("Is5900PortEnabled", s.Is5900PortEnabled),
			f("OptInPolicy", s.OptInPolicy), f("OptInPolicyTimeout", s.OptInPolicyTimeout), f("SessionTimeout", s.SessionTimeout)}, err)
	case clsOptIn:
		o, err := d.GetOptIn()
		canModify := 0
		if o.CanModifyOptInPolicy {
			canModify = 1
		}
		return one([]field{f("CanModifyOptInPolicy", canModify), f("CreationClassName", class), f("ElementName", "Intel(r) AMT OptIn Service"),
			f("Name", "Intel(r) AMT OptIn Service"), f("OptInCodeTimeout", 120), f("OptInDisplayTimeout", 300),
			f("OptInRequired", o.OptInRequired), f("OptInState", 0), f("SystemCreationClassName", "CIM_ComputerSystem"), f("SystemName", "Intel(r) AMT")}, err)
	case clsPKService:
		_, err := d.KeyPairs()
		return one(serviceFields(class, "Intel(r) AMT Public Key Management Service", f("EnabledState", 5)), err)
	case clsKeyPair:
		keys, err := d.KeyPairs()
		for _, k := range keys {
			list = append(list, instance{class: class, fields: []field{f("DERKey", k.DERKey), f("ElementName", "Intel(r) AMT Key"), f("InstanceID", k.Handle)}})
		}
		return list, err
	case clsCert:
		certs, err := d.Certificates()
		for _, c := range certs {
			list = append(list, instance{class: class, fields: []field{
				f("ElementName", "Intel(r) AMT Certificate"), f("InstanceID", c.Handle), f("Issuer", c.Issuer),
				f("ReadOnlyCertificate", false), f("Subject", c.Subject), f("TrustedRootCertficate", false),
				f("X509Certificate", base64.StdEncoding.EncodeToString(c.DER)),
			}})
		}
		return list, err
	case clsTLSContext:
		handle, err := d.TLSCredentialContext()
		if err != nil || handle == "" {
			return nil, err
		}
		return one(contextFields(handle), nil)
	case clsTLSSettings:
		settings, err := d.TLSSettings()
		for _, s := range settings {
			list = append(list, instance{class: class, fields: []field{
				f("AcceptNonSecureConnections", s.AcceptNonSecureConnections), f("ElementName", s.InstanceID), f("Enabled", s.Enabled),
				f("InstanceID", s.InstanceID), f("MutualAuthentication", s.MutualAuthentication), f("NonSecureConnectionsSupported", true),
			}})
		}
		return list, err
	}
	return nil, errNoClass
}

func contextFields(certHandle string) []field {
	return []field{
		epr(clsCert, "InstanceID", certHandle).named("ElementInContext"),
		epr(clsTLSEndpoint, "ElementName", "TLSProtocolEndpoint Instances Collection").named("ElementProvidingContext"),
	}
}

// deviceFault answers a device refusal with the fault firmware sends.
func (h *Handler) deviceFault(err error) reply {
	switch {
	case errors.Is(err, device.ErrNotActivated):
		return h.fault("c:AccessDenied", err.Error())
	case errors.Is(err, device.ErrAlreadyExists):
		return h.fault("c:AlreadyExists", err.Error())
	case errors.Is(err, device.ErrNoInstance):
		return h.fault("c:InvalidSelectors", err.Error())
	}
	return h.fault("c:InvalidRepresentation", err.Error())
}

// representation reads the instance a Put or Create carries: the class
// element in the class namespace, one child per property.
func representation(req *request) (map[string]string, error) {
	in, ns := req.input, classNamespace(req.class)
	if in == nil || in.Name != req.class || in.Space != ns {
		got := "nothing"
		if in != nil {
			got = fmt.Sprintf("{%s}%s", in.Space, in.Name)
		}
		return nil, fmt.Errorf("body must be {%s}%s, got %s", ns, req.class, got)
	}
	props := map[string]string{}
	for _, c := range in.Children {
		if c.Space != ns {
			return nil, fmt.Errorf("property %s is in namespace %q, want %q", c.Name, c.Space, ns)
		}
		props[c.Name] = c.text()
	}
	return props, nil
}

// putRule is what a Put may carry for one class: keys that must match the
// instance, properties it writes, and those it must include.
type putRule struct {
	keys, writable, required []string
	apply                    func(d *device.Device, instanceID string, props map[string]string) error
}

var serviceKeys = []string{"Name", "CreationClassName", "SystemName", "SystemCreationClassName"}

var putRules = map[string]putRule{
	clsRedirection: {
		keys: serviceKeys, writable: []string{"ListenerEnabled"}, required: []string{"ListenerEnabled"},
		apply: func(d *device.Device, _ string, p map[string]string) error {
			on, err := boolProp(p, "ListenerEnabled")
			if err != nil {
				return err
			}
			return d.SetRedirectionListener(*on)
		},
	},
	clsOptIn: {
		keys: serviceKeys, writable: []string{"OptInRequired"}, required: []string{"OptInRequired"},
		apply: func(d *device.Device, _ string, p map[string]string) error {
			v, err := strconv.ParseUint(p["OptInRequired"], 10, 32)
			if err != nil {
				return fmt.Errorf("%w: OptInRequired %q is not a uint32", device.ErrInvalidValue, p["OptInRequired"])
			}
			return d.SetOptInRequired(uint32(v))
		},
	},
	clsKVMSettings: {
		keys:     []string{"InstanceID"},
		writable: []string{"Is5900PortEnabled", "OptInPolicy", "OptInPolicyTimeout", "SessionTimeout", "DefaultScreen", "RFBPassword"},
		apply: func(d *device.Device, _ string, p map[string]string) error {
			var c device.KVMSettingsChange
			var err error
			if c.Is5900PortEnabled, err = boolProp(p, "Is5900PortEnabled"); err != nil {
				return err
			}
			if c.OptInPolicy, err = boolProp(p, "OptInPolicy"); err != nil {
				return err
			}
			for name, dst := range map[string]**int{"OptInPolicyTimeout": &c.OptInPolicyTimeout, "SessionTimeout": &c.SessionTimeout, "DefaultScreen": &c.DefaultScreen} {
				if *dst, err = intProp(p, name); err != nil {
					return err
				}
			}
			if pw, ok := p["RFBPassword"]; ok {
				c.RFBPassword = &pw
			}
			_, err = d.PutKVMSettings(c)
			return err
		},
	},
	clsTLSSettings: {
		keys:     []string{"InstanceID"},
		writable: []string{"Enabled", "AcceptNonSecureConnections", "MutualAuthentication", "TrustedCN"},
		apply: func(d *device.Device, id string, p map[string]string) error {
			if p["TrustedCN"] != "" {
				return fmt.Errorf("%w: TrustedCN applies to mutual authentication, which the simulator does not model", device.ErrInvalidValue)
			}
			var c device.TLSSettingChange
			var err error
			for name, dst := range map[string]**bool{"Enabled": &c.Enabled, "AcceptNonSecureConnections": &c.AcceptNonSecureConnections, "MutualAuthentication": &c.MutualAuthentication} {
				if *dst, err = boolProp(p, name); err != nil {
					return err
				}
			}
			_, err = d.PutTLSSetting(id, c)
			return err
		},
	},
}

func boolProp(p map[string]string, name string) (*bool, error) {
	s, ok := p[name]
	if !ok {
		return nil, nil
	}
	switch strings.ToLower(s) {
	case "true", "1":
		v := true
		return &v, nil
	case "false", "0":
		v := false
		return &v, nil
	}
	return nil, fmt.Errorf("%w: %s %q is not a boolean", device.ErrInvalidValue, name, s)
}

func intProp(p map[string]string, name string) (*int, error) {
	s, ok := p[name]
	if !ok {
		return nil, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %s %q is not an integer", device.ErrInvalidValue, name, s)
	}
	return &v, nil
}

// put is WS-Transfer Put: the whole representation of one instance. Key
// properties must name the instance, read-only ones are ignored as
// firmware does, unknown ones are refused.
func (h *Handler) put(req *request) reply {
	rule, ok := putRules[req.class]
	if !ok {
		return h.fault("b:ActionNotSupported", "Put is not supported on "+req.class)
	}
	cur, rep, ok := h.selected(req)
	if !ok {
		return rep
	}
	props, err := representation(req)
	if err != nil {
		return h.fault("c:InvalidRepresentation", err.Error())
	}
	writable := map[string]bool{}
	for _, n := range rule.writable {
		writable[n] = true
	}
	for name, v := range props {
		known := writable[name]
		for _, fl := range cur.fields {
			known = known || fl.name == name
		}
		if !known {
			return h.fault("c:InvalidRepresentation", fmt.Sprintf("%s has no property %s", req.class, name))
		}
		for _, k := range rule.keys {
			if k == name && v != cur.value(k) {
				return h.fault("c:InvalidRepresentation", fmt.Sprintf("key property %s is %q, not %q", k, cur.value(k), v))
			}
		}
	}
	for _, name := range rule.required {
		if _, ok := props[name]; !ok {
			return h.fault("c:InvalidRepresentation", fmt.Sprintf("a Put of %s must include %s", req.class, name))
		}
	}
	if err := rule.apply(h.dev, cur.value("InstanceID"), props); err != nil {
		return h.deviceFault(err)
	}
	h.log.Info("WS-Man put", "class", req.class)
	updated, rep, ok := h.selected(req)
	if !ok {
		return rep
	}
	return reply{status: http.StatusOK, action: actPut + "Response", body: updated.render("g")}
}

// create is WS-Transfer Create; only AMT_TLSCredentialContext is created
// this way: ElementInContext names the certificate, ElementProvidingContext
// the TLS endpoint collection.
func (h *Handler) create(req *request) reply {
	if req.class != clsTLSContext {
		return h.fault("b:ActionNotSupported", "Create is not supported on "+req.class)
	}
	in, ns := req.input, classNamespace(req.class)
	if in == nil || in.Name != req.class || in.Space != ns {
		return h.fault("c:InvalidRepresentation", fmt.Sprintf("body must be {%s}%s", ns, req.class))
	}
	certURI, certHandle := eprTarget(in.child("ElementInContext"), "InstanceID")
	endpointURI, _ := eprTarget(in.child("ElementProvidingContext"), "ElementName")
	switch {
	case certURI != classNamespace(clsCert) || certHandle == "":
		return h.fault("c:InvalidRepresentation", "ElementInContext must reference an AMT_PublicKeyCertificate by InstanceID")
	case endpointURI != classNamespace(clsTLSEndpoint):
		return h.fault("c:InvalidRepresentation", "ElementProvidingContext must reference the AMT_TLSProtocolEndpointCollection")
	}
	if err := h.dev.CreateTLSCredentialContext(certHandle); err != nil {
		return h.deviceFault(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<g:ResourceCreated xmlns:g="%s"><b:Address>%s</b:Address><b:ReferenceParameters><c:ResourceURI>%s</c:ResourceURI><c:SelectorSet>`,
		nsTransfer, anonymous, classNamespace(clsTLSContext))
	for _, fl := range contextFields(certHandle) {
		fmt.Fprintf(&b, `<c:Selector Name="%s"><b:EndpointReference>%s</b:EndpointReference></c:Selector>`, fl.name, fl.values[0])
	}
	b.WriteString(`</c:SelectorSet></b:ReferenceParameters></g:ResourceCreated>`)
	return reply{status: http.StatusOK, action: actCreate + "Response", body: b.String()}
}

// eprTarget reads an endpoint reference: its ResourceURI and the value of
// the named selector.
func eprTarget(ref *node, selector string) (uri, value string) {
	params := ref.child("ReferenceParameters")
	uri = params.child("ResourceURI").text()
	for _, s := range params.path("SelectorSet").childrenNamed("Selector") {
		if s.attr("Name") == selector {
			value = s.text()
		}
	}
	return uri, value
}

// featureMethods are the configuration classes' custom methods.
var featureMethods = map[string]methodFunc{
	clsRedirection + ".RequestStateChange": func(d *device.Device, p params) (int, []field, error) {
		st, ok := p.num("RequestedState")
		if !ok {
			return 0, nil, missing("RequestedState")
		}
		rv, err := d.RedirectionStateChange(int(st))
		return rv, nil, err
	},
	clsKVMSAP + ".RequestStateChange": func(d *device.Device, p params) (int, []field, error) {
		st, ok := p.num("RequestedState")
		if !ok {
			return 0, nil, missing("RequestedState")
		}
		rv, err := d.KVMStateChange(int(st))
		return rv, nil, err
	},
	clsPKService + ".GenerateKeyPair": func(d *device.Device, p params) (int, []field, error) {
		alg, ok1 := p.num("KeyAlgorithm")
		n, ok2 := p.num("KeyLength")
		if !ok1 || !ok2 {
			return 0, nil, missing("KeyAlgorithm", "KeyLength")
		}
		handle, rv, err := d.GenerateKeyPair(int(alg), int(n))
		if err != nil || rv != device.PTSuccess {
			return rv, nil, err
		}
		return rv, []field{epr(clsKeyPair, "InstanceID", handle).named("KeyPair")}, nil
	},
	clsPKService + ".AddCertificate": func(d *device.Device, p params) (int, []field, error) {
		blob, ok := p.str("CertificateBlob")
		if !ok {
			return 0, nil, missing("CertificateBlob")
		}
		handle, rv, err := d.AddCertificate(blob)
		if err != nil || rv != device.PTSuccess {
			return rv, nil, err
		}
		return rv, []field{epr(clsCert, "InstanceID", handle).named("CreatedCertificate")}, nil
	},
}
