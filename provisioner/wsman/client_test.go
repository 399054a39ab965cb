package wsman

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/branchbox/branchbox/provisioner/democa"
)

const okBody = `<?xml version="1.0" encoding="UTF-8"?><a:Envelope xmlns:a="http://www.w3.org/2003/05/soap-envelope" xmlns:g="http://intel.com/wbem/wscim/1/amt-schema/1/AMT_GeneralSettings"><a:Header/><a:Body><g:AMT_GeneralSettings><g:DigestRealm>Digest:0123456789ABCDEF0123456789ABCDEF</g:DigestRealm></g:AMT_GeneralSettings></a:Body></a:Envelope>`

const faultBody = `<a:Envelope xmlns:a="http://www.w3.org/2003/05/soap-envelope"><a:Body><a:Fault><a:Code><a:Value>a:Sender</a:Value><a:Subcode><a:Value>b:DestinationUnreachable</a:Value></a:Subcode></a:Code><a:Reason><a:Text xml:lang="en-US">No route can be determined</a:Text></a:Reason></a:Fault></a:Body></a:Envelope>`

// digestServer accepts only user/pass, answering like AMT: 401 with a
// digest challenge, then the body for an authorised request.
func digestServer(t *testing.T, user, pass string, body string, seenCert *atomic.Value) *httptest.Server {
	t.Helper()
	const realm, nonce = "Digest:0123456789ABCDEF0123456789ABCDEF", "abc123"
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && seenCert != nil {
			seenCert.Store(len(r.TLS.PeerCertificates))
		}
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Server", "Intel(R) Active Management Technology 11.8.55")
		if !checkDigest(r.Header.Get("Authorization"), user, pass, realm, nonce) {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Digest realm="%s", nonce="%s", stale="false", qop="auth"`, realm, nonce))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if strings.Contains(body, "Fault") {
			w.WriteHeader(http.StatusBadRequest)
		}
		io.WriteString(w, body)
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func checkDigest(h, user, pass, realm, nonce string) bool {
	if !strings.HasPrefix(h, "Digest ") {
		return false
	}
	p := map[string]string{}
	for _, kv := range splitParams(h[7:]) {
		k, v, _ := strings.Cut(kv, "=")
		p[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"`)
	}
	ha1 := md5hex(user + ":" + realm + ":" + pass)
	ha2 := md5hex("POST:" + p["uri"])
	want := md5hex(ha1 + ":" + nonce + ":" + p["nc"] + ":" + p["cnonce"] + ":" + p["qop"] + ":" + ha2)
	return p["username"] == user && p["response"] == want
}

func clientTLS(t *testing.T) *tls.Config {
	t.Helper()
	ca, err := democa.Generate(democa.Options{Domain: "branch1.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	return ProvisioningTLS([][]byte{ca.Leaf.Raw, ca.Intermediate.Raw, ca.Root.Raw}, ca.LeafKey)
}

func TestDigestFallsBackToEmptyPassword(t *testing.T) {
	var certs atomic.Value
	srv := digestServer(t, "admin", "", okBody, &certs)
	c := New(Options{URL: srv.URL + "/wsman", TLS: clientTLS(t), Credentials: []Credential{{"admin", "admin"}, {"admin", ""}}})
	defer c.Close()
	doc, err := c.Post(context.Background(), "<Envelope/>")
	if err != nil {
		t.Fatal(err)
	}
	if got := doc.Value("DigestRealm"); got != "Digest:0123456789ABCDEF0123456789ABCDEF" {
		t.Errorf("realm %q", got)
	}
	if got := c.Credential(); got != (Credential{"admin", ""}) {
		t.Errorf("accepted credential %+v", got)
	}
	if n, _ := certs.Load().(int); n != 3 {
		t.Errorf("device saw %d client certificates, want the 3-certificate chain", n)
	}
	if !strings.Contains(c.Server(), "11.8.55") {
		t.Errorf("server header %q", c.Server())
	}
	// The cached challenge answers the next request straight away.
	if _, err := c.Post(context.Background(), "<Envelope/>"); err != nil {
		t.Fatal(err)
	}
}

func TestEveryCredentialRefused(t *testing.T) {
	srv := digestServer(t, "admin", "secret", okBody, nil)
	c := New(Options{URL: srv.URL + "/wsman", TLS: clientTLS(t), Credentials: []Credential{{"admin", "admin"}, {"admin", ""}}})
	defer c.Close()
	if _, err := c.Post(context.Background(), "<Envelope/>"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("err = %v", err)
	}
}

func TestFault(t *testing.T) {
	srv := digestServer(t, "admin", "admin", faultBody, nil)
	c := New(Options{URL: srv.URL + "/wsman", TLS: clientTLS(t), Credentials: []Credential{{"admin", "admin"}}})
	defer c.Close()
	_, err := c.Post(context.Background(), "<Envelope/>")
	var f *FaultError
	if !errors.As(err, &f) || f.Subcode != "b:DestinationUnreachable" || f.Status != 400 {
		t.Fatalf("err = %v", err)
	}
	if IsTransient(err) {
		t.Error("a fault is not transient")
	}
}

func TestRefusedConnectionIsTransient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := New(Options{URL: "https://" + addr + "/wsman", TLS: clientTLS(t), Timeout: 2 * time.Second})
	_, err = c.Post(context.Background(), "<Envelope/>")
	if !IsTransient(err) {
		t.Fatalf("err = %v, want transient", err)
	}
}

// Old firmware offers only RSA key exchange; the client must still connect.
func TestRSAKeyExchangeOnly(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, okBody) }))
	srv.TLS = &tls.Config{
		ClientAuth:   tls.RequireAnyClientCert,
		MaxVersion:   tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA},
	}
	srv.StartTLS()
	defer srv.Close()
	c := New(Options{URL: srv.URL + "/wsman", TLS: clientTLS(t)})
	defer c.Close()
	if _, err := c.Post(context.Background(), "<Envelope/>"); err != nil {
		t.Fatal(err)
	}
}

func TestParseXMLHelpers(t *testing.T) {
	doc, err := ParseXML([]byte(`<E><B><Item><Name>a</Name></Item><Item><Name> b </Name></Item></B></E>`))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(doc.FindAll("Item")); n != 2 {
		t.Errorf("%d items", n)
	}
	if doc.FindAll("Item")[1].Value("Name") != "b" {
		t.Error("Value does not trim")
	}
	if _, err := ParseXML([]byte("")); err == nil {
		t.Error("empty document parsed")
	}
}

func TestRefusedChainIsNotTransient(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.TLS = &tls.Config{
		ClientAuth: tls.RequireAnyClientCert,
		VerifyPeerCertificate: func([][]byte, [][]*x509.Certificate) error {
			return errors.New("domain mismatch")
		},
	}
	srv.StartTLS()
	defer srv.Close()
	c := New(Options{URL: srv.URL + "/wsman", TLS: clientTLS(t)})
	defer c.Close()
	_, err := c.Post(context.Background(), "<Envelope/>")
	var refused *RefusedError
	if !errors.As(err, &refused) || IsTransient(err) {
		t.Fatalf("err = %v", err)
	}
}
