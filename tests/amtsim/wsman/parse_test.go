package wsman

import (
	"bytes"
	"testing"

	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/amt"
	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/ips"
	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/ips/hostbasedsetup"
)

func TestParseRequestFromGoWsmanMessages(t *testing.T) {
	hbs := ips.NewMessages().HostBasedSetupService
	msg := hbs.AdminSetup(hostbasedsetup.AdminPassEncryptionTypeHTTPDigestMD5A1, "Digest:00", "pw", "bm9uY2U=", hostbasedsetup.SigningAlgorithmRSASHA2256, "c2ln")
	env, err := parseXML(bytes.NewReader([]byte(msg)))
	if err != nil {
		t.Fatal(err)
	}
	req, err := parseRequest(env)
	if err != nil {
		t.Fatal(err)
	}
	if req.class != "IPS_HostBasedSetupService" || req.input.Name != "AdminSetup_INPUT" || req.input.Space != ipsBase+"IPS_HostBasedSetupService" {
		t.Fatalf("%+v", req)
	}
	if got := req.input.child("McNonce").text(); got != "bm9uY2U=" {
		t.Fatalf("McNonce %q", got)
	}
}

func TestParseDigest(t *testing.T) {
	p, ok := parseDigest(`Digest username="admin", realm="Digest:AB", nonce="n1", uri="/wsman", response="abc", qop=auth, nc=00000001, cnonce="c", algorithm="MD5"`)
	if !ok || p["username"] != "admin" || p["qop"] != "auth" || p["nc"] != "00000001" || p["cnonce"] != "c" || p["algorithm"] != "MD5" {
		t.Fatalf("%v %v", p, ok)
	}
	if _, ok := parseDigest(`Basic YWRtaW46YWRtaW4=`); ok {
		t.Fatal("basic auth parsed as digest")
	}
}

// No request body may crash the endpoint.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(amt.NewMessages().GeneralSettings.Get()))
	f.Add([]byte(amt.NewMessages().AuthorizationService.SetAdminACLEntryEx("admin", "qJPnlrnBjtSEXIqsAfgjOA==")))
	f.Add([]byte(`<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope"><Header/><Body/></Envelope>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := parseXML(bytes.NewReader(b))
		if err != nil {
			return
		}
		if req, err := parseRequest(env); err == nil {
			_ = req.input.child("x").text()
		}
	})
}

func FuzzParseDigest(f *testing.F) {
	f.Add(`Digest username="admin", realm="Digest:AB", nonce="n1", uri="/wsman", response="abc", qop=auth, nc=00000001, cnonce="c"`)
	f.Add(`Digest realm=""`)
	f.Fuzz(func(t *testing.T, h string) { parseDigest(h) })
}
