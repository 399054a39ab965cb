package wsman

import (
	"encoding/xml"
	"fmt"
	"regexp"
	"strings"
)

// Namespaces and actions of WS-Management as AMT speaks it.
const (
	nsSOAP  = "http://www.w3.org/2003/05/soap-envelope"
	nsAddr  = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
	nsWSMan = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
	nsEnum  = "http://schemas.xmlsoap.org/ws/2004/09/enumeration"

	actGet       = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get"
	actEnumerate = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate"
	actPull      = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Pull"
	actPut       = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Put"
	actCreate    = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
	nsTransfer   = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
	actFault     = "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault"
	anonymous    = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"

	amtBase = "http://intel.com/wbem/wscim/1/amt-schema/1/"
	ipsBase = "http://intel.com/wbem/wscim/1/ips-schema/1/"
	cimBase = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/"
)

// classNamespace maps a class name to its resource URI / XML namespace.
func classNamespace(class string) string {
	switch {
	case strings.HasPrefix(class, "AMT_"):
		return amtBase + class
	case strings.HasPrefix(class, "IPS_"):
		return ipsBase + class
	case strings.HasPrefix(class, "CIM_"):
		return cimBase + class
	}
	return ""
}

// request is the part of a WS-Man request the device acts on.
type request struct {
	action      string
	resourceURI string
	class       string
	messageID   string
	selectors   map[string]string
	input       *node // first element inside Body, nil when empty
}

func parseRequest(env *node) (*request, error) {
	if env.Name != "Envelope" || env.Space != nsSOAP {
		return nil, fmt.Errorf("root element {%s}%s is not a SOAP 1.2 Envelope", env.Space, env.Name)
	}
	hdr, body := env.child("Header"), env.child("Body")
	if hdr == nil || body == nil {
		return nil, fmt.Errorf("envelope without Header or Body")
	}
	r := &request{
		action:      hdr.child("Action").text(),
		resourceURI: hdr.child("ResourceURI").text(),
		messageID:   hdr.child("MessageID").text(),
		selectors:   map[string]string{},
	}
	if r.action == "" || r.resourceURI == "" {
		return nil, fmt.Errorf("header lacks Action or ResourceURI")
	}
	r.class = r.resourceURI[strings.LastIndex(r.resourceURI, "/")+1:]
	for _, s := range hdr.path("SelectorSet").childrenNamed("Selector") {
		r.selectors[s.attr("Name")] = s.text()
	}
	if len(body.Children) > 0 {
		r.input = body.Children[0]
	}
	return r, nil
}

func (n *node) childrenNamed(name string) []*node {
	if n == nil {
		return nil
	}
	var out []*node
	for _, c := range n.Children {
		if c.Name == name {
			out = append(out, c)
		}
	}
	return out
}

// field is one property of a returned instance; repeated values render as
// repeated elements (AllowedControlModes). A raw field holds XML (an
// endpoint reference) rendered unescaped.
type field struct {
	name   string
	values []string
	raw    bool
}

func f(name string, v any) field { return field{name: name, values: []string{fmt.Sprint(v)}} }

type instance struct {
	class  string
	fields []field
}

// value is the first value of the named field, "" when absent.
func (in instance) value(name string) string {
	for _, fl := range in.fields {
		if fl.name == name && len(fl.values) > 0 {
			return fl.values[0]
		}
	}
	return ""
}

// epr is a WS-Addressing endpoint reference to one instance of a class,
// with the prefixes of the response envelope (b addressing, c wsman).
func epr(class, selector, value string) field {
	return field{raw: true, values: []string{`<b:Address>` + anonymous + `</b:Address><b:ReferenceParameters><c:ResourceURI>` +
		classNamespace(class) + `</c:ResourceURI><c:SelectorSet><c:Selector Name="` + selector + `">` + esc(value) +
		`</c:Selector></c:SelectorSet></b:ReferenceParameters>`}}
}

// named gives a field its property name.
func (fl field) named(name string) field {
	fl.name = name
	return fl
}

func (fl field) text(v string) string {
	if fl.raw {
		return v
	}
	return esc(v)
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// render writes an instance with prefix p bound to its class namespace.
func (in instance) render(p string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `<%s:%s xmlns:%s="%s">`, p, in.class, p, classNamespace(in.class))
	for _, fl := range in.fields {
		for _, v := range fl.values {
			fmt.Fprintf(&b, `<%s:%s>%s</%s:%s>`, p, fl.name, fl.text(v), p, fl.name)
		}
	}
	fmt.Fprintf(&b, `</%s:%s>`, p, in.class)
	return b.String()
}

// envelope builds a response the way AMT lays it out: prefixes a (SOAP),
// b (addressing), c (wsman), and every prefix the body uses, all declared
// on the Envelope. Body content supplied by the caller declares its own
// prefixes where it uses them; they are hoisted here because firmware
// sends no attribute on an instance element, and parsers that read items
// as plain property maps (MeshCentral's) take an xmlns attribute for a
// property and lose the instance's fields under it.
func envelope(action, relatesTo, resourceURI, messageID, body string) string {
	body, decls := hoistNamespaces(body)
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>`)
	fmt.Fprintf(&b, `<a:Envelope xmlns:a="%s" xmlns:b="%s" xmlns:c="%s"%s xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">`, nsSOAP, nsAddr, nsWSMan, decls)
	fmt.Fprintf(&b, `<a:Header><b:To>%s</b:To><b:RelatesTo>%s</b:RelatesTo><b:Action a:mustUnderstand="true">%s</b:Action><b:MessageID>%s</b:MessageID>`,
		anonymous, esc(relatesTo), esc(action), messageID)
	if resourceURI != "" {
		fmt.Fprintf(&b, `<c:ResourceURI>%s</c:ResourceURI>`, esc(resourceURI))
	}
	b.WriteString(`</a:Header><a:Body>`)
	b.WriteString(body)
	b.WriteString(`</a:Body></a:Envelope>`)
	return b.String()
}

var xmlnsAttr = regexp.MustCompile(` xmlns:([a-z]+)="([^"]*)"`)

// hoistNamespaces removes the prefix declarations from body and returns
// them as Envelope attributes. A prefix bound to two namespaces in one
// body keeps its inner declarations (no response does that today).
func hoistNamespaces(body string) (string, string) {
	bound := map[string]string{}
	var order []string
	clash := map[string]bool{}
	for _, m := range xmlnsAttr.FindAllStringSubmatch(body, -1) {
		switch ns, ok := bound[m[1]]; {
		case !ok:
			bound[m[1]] = m[2]
			order = append(order, m[1])
		case ns != m[2]:
			clash[m[1]] = true
		}
	}
	var decls strings.Builder
	for _, p := range order {
		if clash[p] {
			continue
		}
		fmt.Fprintf(&decls, ` xmlns:%s="%s"`, p, bound[p])
	}
	body = xmlnsAttr.ReplaceAllStringFunc(body, func(attr string) string {
		if clash[xmlnsAttr.FindStringSubmatch(attr)[1]] {
			return attr
		}
		return ""
	})
	return body, decls.String()
}

// faultBody is a SOAP 1.2 fault with a WS-Addressing / WS-Man subcode.
func faultBody(subcode, reason string) string {
	return fmt.Sprintf(`<a:Fault><a:Code><a:Value>a:Sender</a:Value><a:Subcode><a:Value>%s</a:Value></a:Subcode></a:Code><a:Reason><a:Text xml:lang="en-US">%s</a:Text></a:Reason><a:Detail></a:Detail></a:Fault>`,
		subcode, esc(reason))
}

// outputBody is a method's <g:Method_OUTPUT> with ReturnValue last.
func outputBody(class, method string, rv int, extra ...field) string {
	in := instance{class: method + "_OUTPUT", fields: append(extra, f("ReturnValue", rv))}
	var b strings.Builder
	fmt.Fprintf(&b, `<g:%s xmlns:g="%s">`, in.class, classNamespace(class))
	for _, fl := range in.fields {
		for _, v := range fl.values {
			fmt.Fprintf(&b, `<g:%s>%s</g:%s>`, fl.name, fl.text(v), fl.name)
		}
	}
	fmt.Fprintf(&b, `</g:%s>`, in.class)
	return b.String()
}
