package session

import (
	"crypto/md5"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/amt"
	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/cim"
	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/ips"
)

const (
	amtSchema       = "http://intel.com/wbem/wscim/1/amt-schema/1/"
	ipsSchema       = "http://intel.com/wbem/wscim/1/ips-schema/1/"
	actionPut       = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Put"
	setupService    = "AMT_SetupAndConfigurationService"
	authService     = "AMT_AuthorizationService"
	anonymousReplTo = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
)

// messages builds every envelope one session sends. go-wsman-messages
// numbers messages with an unguarded counter, so each session owns its
// builders.
type messages struct {
	amt  amt.Messages
	cim  cim.Messages
	ips  ips.Messages
	next int // message ids of the hand-built envelopes
}

func newMessages() *messages {
	return &messages{amt: amt.NewMessages(), cim: cim.NewMessages(), ips: ips.NewMessages(), next: 1000}
}

// frame builds an envelope the way go-wsman-messages v1.8.1 does, for the
// calls it cannot build correctly. selector, when set, addresses one
// instance by InstanceID.
func (m *messages) frame(action, uri, selector, body string) string {
	m.next++
	sel := ""
	if selector != "" {
		sel = `<w:SelectorSet><w:Selector Name="InstanceID">` + xmlEscape(selector) + `</w:Selector></w:SelectorSet>`
	}
	return `<?xml version="1.0" encoding="utf-8"?><Envelope xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns="http://www.w3.org/2003/05/soap-envelope">` +
		`<Header><a:Action>` + action + `</a:Action><a:To>/wsman</a:To><w:ResourceURI>` + uri + `</w:ResourceURI>` +
		fmt.Sprintf(`<a:MessageID>%d</a:MessageID>`, m.next) +
		`<a:ReplyTo><a:Address>` + anonymousReplTo + `</a:Address></a:ReplyTo><w:OperationTimeout>PT60S</w:OperationTimeout>` + sel + `</Header>` +
		`<Body>` + body + `</Body></Envelope>`
}

// envelope calls method of an AMT class.
func (m *messages) envelope(class, method, inner string) string {
	return m.invoke(amtSchema+class, method, inner)
}

// invoke calls a method of the class at uri.
func (m *messages) invoke(uri, method, inner string) string {
	return m.frame(uri+"/"+method, uri, "",
		`<h:`+method+`_INPUT xmlns:h="`+uri+`">`+inner+`</h:`+method+`_INPUT>`)
}

// put sends the representation of an instance: the properties given, in
// order, as elements of the class namespace.
func (m *messages) put(uri, selector string, props [][2]string) string {
	class := uri[strings.LastIndex(uri, "/")+1:]
	var b strings.Builder
	b.WriteString(`<h:` + class + ` xmlns:h="` + uri + `">`)
	for _, p := range props {
		b.WriteString(`<h:` + p[0] + `>` + xmlEscape(p[1]) + `</h:` + p[0] + `>`)
	}
	b.WriteString(`</h:` + class + `>`)
	return m.frame(actionPut, uri, selector, b.String())
}

// setAdminAclEntryEx is hand-built: v1.8.1 names the body element
// SetAdminACLEntryEx_INPUT, which does not match the method
// (amt-protocol.md §3.6).
func (m *messages) setAdminAclEntryEx(user, digestPassword string) string {
	return m.envelope(authService, "SetAdminAclEntryEx",
		"<h:Username>"+xmlEscape(user)+"</h:Username><h:DigestPassword>"+digestPassword+"</h:DigestPassword>")
}

// extendProvisioningPeriod is not in v1.8.1; Duration 0 closes the
// device's provisioning window, which is how a setup server aborts.
func (m *messages) extendProvisioningPeriod(hours int) string {
	return m.envelope(setupService, "ExtendProvisioningPeriod", fmt.Sprintf("<h:Duration>%d</h:Duration>", hours))
}

// setMEBxPassword escapes the password, which v1.8.1 pastes in raw.
func (m *messages) setMEBxPassword(pw string) string {
	return m.amt.SetupAndConfigurationService.SetMEBXPassword(xmlEscape(pw))
}

// DigestPassword is what SetAdminAclEntryEx takes: base64 of the raw MD5
// of "admin:<realm>:<password>" (amt-protocol.md §3.5), not the hex form
// AdminSetup uses.
func DigestPassword(user, realm, password string) string {
	sum := md5.Sum([]byte(user + ":" + realm + ":" + password))
	return base64.StdEncoding.EncodeToString(sum[:])
}

var xmlEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&apos;")

func xmlEscape(s string) string { return xmlEscaper.Replace(s) }
