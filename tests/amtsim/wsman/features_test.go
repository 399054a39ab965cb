package wsman

import (
	"fmt"
	"strings"
	"testing"

	"github.com/branchbox/branchbox/tests/amtsim/device"
	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/amt"
	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/amt/publickey"
	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/amt/redirection"
	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/cim"
	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/ips"
)

// wsmanEnvelope frames a body as clients do; selector addresses an instance.
func wsmanEnvelope(action, uri, selector, body string) string {
	sel := ""
	if selector != "" {
		sel = `<w:SelectorSet><w:Selector Name="InstanceID">` + selector + `</w:Selector></w:SelectorSet>`
	}
	return `<?xml version="1.0" encoding="utf-8"?><Envelope xmlns="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><Header>` +
		`<a:Action>` + action + `</a:Action><a:To>/wsman</a:To><w:ResourceURI>` + uri + `</w:ResourceURI><a:MessageID>7</a:MessageID>` +
		`<a:ReplyTo><a:Address>` + anonymous + `</a:Address></a:ReplyTo>` + sel + `</Header><Body>` + body + `</Body></Envelope>`
}

func putBody(class string, props ...string) string {
	ns := classNamespace(class)
	var b strings.Builder
	fmt.Fprintf(&b, `<h:%s xmlns:h="%s">`, class, ns)
	for i := 0; i+1 < len(props); i += 2 {
		fmt.Fprintf(&b, `<h:%s>%s</h:%s>`, props[i], props[i+1], props[i])
	}
	fmt.Fprintf(&b, `</h:%s>`, class)
	return b.String()
}

func TestConfigurationClassesOverWSMan(t *testing.T) {
	fx := start(t, true, true, nil)
	amtM, cimM, ipsM := amt.NewMessages(), cim.NewMessages(), ips.NewMessages()
	redirURI := classNamespace("AMT_RedirectionService")
	rsc := func(state int) string {
		return wsmanEnvelope(redirURI+"/RequestStateChange", redirURI, "",
			fmt.Sprintf(`<h:RequestStateChange_INPUT xmlns:h="%s"><h:RequestedState>%d</h:RequestedState></h:RequestStateChange_INPUT>`, redirURI, state))
	}
	redirPut := func(listener string) string {
		return wsmanEnvelope(actPut, redirURI, "", putBody("AMT_RedirectionService", "CreationClassName", "AMT_RedirectionService",
			"Name", "Intel(r) AMT Redirection Service", "SystemCreationClassName", "CIM_ComputerSystem", "SystemName", "Intel(r) AMT", "ListenerEnabled", listener))
	}
	optInURI := classNamespace("IPS_OptInService")
	optInPut := func(v string) string {
		return wsmanEnvelope(actPut, optInURI, "", putBody("IPS_OptInService", "Name", "Intel(r) AMT OptIn Service", "OptInRequired", v))
	}
	tlsURI := classNamespace("AMT_TLSSettingData")

	// In setup mode the remote-configuration session, authenticated by
	// the provisioning chain, may configure the device before its commit
	// (MeshCentral's bare-metal flow enables TLS that way).
	cert := fx.chain.TLSCertificate()
	setup := fx.client("admin", "", &cert)
	if _, err := setup.Post(amtM.RedirectionService.Get()); err != nil {
		t.Fatalf("Get AMT_RedirectionService over the setup session: %v", err)
	}
	fx.dev.SetMEBxPassword(newMEBx)
	fx.dev.CommitChanges()
	admin := fx.client("admin", newMEBx, nil)

	cases := []struct {
		name  string
		msg   string
		fault string // subcode of the expected fault; "" for success
		check func(t *testing.T, resp []byte)
	}{
		{name: "v1.8.1 RequestStateChange goes to a DMTF action URI", msg: amtM.RedirectionService.RequestStateChange(redirection.EnableIDERAndSOL), fault: "ActionNotSupported"},
		{name: "v1.8.1 Put has no class element", msg: amtM.RedirectionService.Put(redirection.RedirectionService{Name: "Intel(r) AMT Redirection Service", ListenerEnabled: true}), fault: "InvalidRepresentation"},
		{name: "redirection RequestStateChange out of range", msg: rsc(5),
			check: func(t *testing.T, r []byte) { wantValue(t, r, "ReturnValue", "5") }},
		{name: "redirection RequestStateChange SOL only", msg: rsc(32770),
			check: func(t *testing.T, r []byte) { wantValue(t, r, "ReturnValue", "0") }},
		{name: "Put ListenerEnabled", msg: redirPut("true"),
			check: func(t *testing.T, r []byte) {
				wantValue(t, r, "ListenerEnabled", "true")
				wantValue(t, r, "EnabledState", "32770")
			}},
		{name: "Put changing a key", msg: wsmanEnvelope(actPut, redirURI, "", putBody("AMT_RedirectionService", "Name", "other", "ListenerEnabled", "true")), fault: "InvalidRepresentation"},
		{name: "Put without ListenerEnabled", msg: wsmanEnvelope(actPut, redirURI, "", putBody("AMT_RedirectionService", "Name", "Intel(r) AMT Redirection Service")), fault: "InvalidRepresentation"},
		{name: "KVM disable", msg: cimM.KVMRedirectionSAP.RequestStateChange(3),
			check: func(t *testing.T, r []byte) { wantValue(t, r, "ReturnValue", "0") }},
		{name: "KVM state read back", msg: cimM.KVMRedirectionSAP.Get(),
			check: func(t *testing.T, r []byte) { wantValue(t, r, "EnabledState", "3") }},
		{name: "opt-in none", msg: optInPut("0"),
			check: func(t *testing.T, r []byte) { wantValue(t, r, "OptInRequired", "0") }},
		{name: "opt-in undefined value", msg: optInPut("7"), fault: "InvalidRepresentation"},
		{name: "opt-in read back", msg: ipsM.OptInService.Get(),
			check: func(t *testing.T, r []byte) { wantValue(t, r, "OptInRequired", "0") }},
		{name: "GenerateKeyPair", msg: amtM.PublicKeyManagementService.GenerateKeyPair(publickey.GenerateKeyPair_INPUT{KeyAlgorithm: 0, KeyLength: 2048}),
			check: func(t *testing.T, r []byte) {
				wantValue(t, r, "ReturnValue", "0")
				wantValue(t, r, "Selector", "Intel(r) AMT Key: Handle: 0")
			}},
		{name: "key pair by selector", msg: wsmanEnvelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/Get", classNamespace("AMT_PublicPrivateKeyPair"), "Intel(r) AMT Key: Handle: 0", ""),
			check: func(t *testing.T, r []byte) {
				if !strings.HasPrefix(value(t, r, "DERKey"), "MIIBCgKCAQEA") {
					t.Errorf("DERKey is not a PKCS#1 RSA 2048 public key:\n%s", r)
				}
			}},
		{name: "AddCertificate of garbage", msg: amtM.PublicKeyManagementService.AddCertificate("AAAA"),
			check: func(t *testing.T, r []byte) { wantValue(t, r, "ReturnValue", fmt.Sprint(device.PTInvalidCert)) }},
		{name: "credential context for no certificate", msg: amtM.TLSCredentialContext.Create("Intel(r) AMT Certificate: Handle: 9"), fault: "InvalidRepresentation"},
		{name: "TLS on without a credential context", msg: wsmanEnvelope(actPut, tlsURI, device.TLSRemoteInstance,
			putBody("AMT_TLSSettingData", "InstanceID", device.TLSRemoteInstance, "Enabled", "true")), fault: "InvalidRepresentation"},
		{name: "TLS Put without a selector for the wrong instance", msg: wsmanEnvelope(actPut, tlsURI, "",
			putBody("AMT_TLSSettingData", "InstanceID", device.TLSLocalInstance, "Enabled", "false")), fault: "InvalidRepresentation"},
		{name: "TLS settings enumerate both instances", msg: amtM.TLSSettingData.Get(),
			check: func(t *testing.T, r []byte) { wantValue(t, r, "InstanceID", device.TLSRemoteInstance) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := admin.Post(c.msg)
			switch {
			case c.fault != "" && (err == nil || !strings.Contains(err.Error(), c.fault)):
				t.Fatalf("want fault %s, got %v\n%s", c.fault, err, resp)
			case c.fault == "" && err != nil:
				t.Fatal(err)
			case c.check != nil:
				c.check(t, resp)
			}
		})
	}
	f := fx.dev.Status().Features
	if !f.SOL || f.IDER || !f.RedirectionListener || f.KVM || f.UserConsent != "none" || f.TLS.Enabled {
		t.Errorf("device features %+v", f)
	}
}

func wantValue(t *testing.T, resp []byte, name, want string) {
	t.Helper()
	if got := value(t, resp, name); got != want {
		t.Errorf("%s = %q, want %q\n%s", name, got, want, resp)
	}
}
