package certrules

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"sync"
	"testing"
	"time"
)

var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// RSA key generation dominates the test time, so keys are made once per size.
var (
	keyMu   sync.Mutex
	keyPool = map[string]*rsa.PrivateKey{}
)

func key(t *testing.T, bits int, slot string) *rsa.PrivateKey {
	t.Helper()
	keyMu.Lock()
	defer keyMu.Unlock()
	id := fmt.Sprintf("%d/%s", bits, slot)
	if k, ok := keyPool[id]; ok {
		return k
	}
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	keyPool[id] = k
	return k
}

// chainSpec describes a chain to build: certs[0] is the root, the last is
// the leaf, each signed by the one before.
type chainSpec struct {
	domain   string
	cn       string
	extraCAs int // intermediates beyond the first
	leafBits int
	midBits  int
	leafTmpl func(*x509.Certificate)
	leafSig  x509.SignatureAlgorithm
	validity [2]time.Time
}

type built struct {
	chain   []*x509.Certificate // leaf first
	leafKey *rsa.PrivateKey
}

func build(t *testing.T, s chainSpec) built {
	t.Helper()
	if s.cn == "" {
		s.cn = "setup.branch1.example.com"
	}
	if s.leafBits == 0 {
		s.leafBits = 2048
	}
	if s.midBits == 0 {
		s.midBits = 2048
	}
	nb, na := now.Add(-24*time.Hour), now.Add(365*24*time.Hour)
	if !s.validity[0].IsZero() {
		nb, na = s.validity[0], s.validity[1]
	}
	ca := func(cn string) *x509.Certificate {
		return &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
			NotBefore: nb, NotAfter: na.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign,
		}
	}
	signed := func(tmpl, parent *x509.Certificate, pub, priv *rsa.PrivateKey) *x509.Certificate {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &pub.PublicKey, priv)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rootKey := key(t, 2048, "root")
	rootT := ca("test root")
	root := signed(rootT, rootT, rootKey, rootKey)
	parent, parentKey := root, rootKey
	cas := []*x509.Certificate{root}
	for i := 0; i <= s.extraCAs; i++ {
		k := key(t, s.midBits, fmt.Sprintf("mid%d", i))
		c := signed(ca(fmt.Sprintf("test intermediate %d", i)), parent, k, parentKey)
		cas = append(cas, c)
		parent, parentKey = c, k
	}
	leafKey := key(t, s.leafBits, "leaf")
	leafT := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: s.cn, OrganizationalUnit: []string{SetupOU}},
		NotBefore:    nb, NotAfter: na,
		KeyUsage:           x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:        []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{OIDClientSetup},
		SignatureAlgorithm: s.leafSig,
	}
	if s.leafTmpl != nil {
		s.leafTmpl(leafT)
	}
	leaf := signed(leafT, parent, leafKey, parentKey)
	chain := []*x509.Certificate{leaf}
	for i := len(cas) - 1; i >= 0; i-- {
		chain = append(chain, cas[i])
	}
	return built{chain: chain, leafKey: leafKey}
}

func TestRules(t *testing.T) {
	const site = "branch1.example.com"
	cases := []struct {
		name   string
		spec   chainSpec
		alter  func(b *built) // reorder, drop, swap key
		domain string
		major  int
		want   map[string]Status // every FAIL must be listed here
	}{
		{name: "good chain", want: map[string]Status{
			RuleSetupOID: Pass, RuleServerAuth: Pass, RuleChainOrder: Pass, RuleChainRoot: Pass,
			RuleChainLength: Pass, RuleKeySize: Pass, RuleSignature: Pass, RuleDomain: Pass,
			RuleValidity: Pass, RuleKeyMatch: Pass, RuleKeyUsage: Pass, RuleRootHash: Warn,
		}},
		{name: "plain TLS cert: no Intel OID, no OU", spec: chainSpec{leafTmpl: func(c *x509.Certificate) {
			c.UnknownExtKeyUsage = nil
			c.Subject.OrganizationalUnit = nil
		}}, want: map[string]Status{RuleSetupOID: Fail}},
		{name: "OU with the wrong case", spec: chainSpec{leafTmpl: func(c *x509.Certificate) {
			c.UnknownExtKeyUsage = nil
			c.Subject.OrganizationalUnit = []string{"intel(r) client setup certificate"}
		}}, want: map[string]Status{RuleSetupOID: Fail}},
		{name: "OU only is enough", spec: chainSpec{leafTmpl: func(c *x509.Certificate) { c.UnknownExtKeyUsage = nil }},
			want: map[string]Status{RuleSetupOID: Pass}},
		{name: "OID only is enough", spec: chainSpec{leafTmpl: func(c *x509.Certificate) { c.Subject.OrganizationalUnit = nil }},
			want: map[string]Status{RuleSetupOID: Pass}},
		{name: "client-auth EKU instead of server-auth", spec: chainSpec{leafTmpl: func(c *x509.Certificate) {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}}, want: map[string]Status{RuleServerAuth: Fail}},
		{name: "key usage without digitalSignature", spec: chainSpec{leafTmpl: func(c *x509.Certificate) {
			c.KeyUsage = x509.KeyUsageKeyEncipherment
		}}, want: map[string]Status{RuleKeyUsage: Warn}},
		{name: "root first (reversed chain)", alter: func(b *built) {
			for i, j := 0, len(b.chain)-1; i < j; i, j = i+1, j-1 {
				b.chain[i], b.chain[j] = b.chain[j], b.chain[i]
			}
		}, want: map[string]Status{RuleChainOrder: Fail, RuleChainRoot: Fail}},
		{name: "intermediate and root swapped", alter: func(b *built) { b.chain[1], b.chain[2] = b.chain[2], b.chain[1] },
			want: map[string]Status{RuleChainOrder: Fail, RuleChainRoot: Fail}},
		{name: "root missing", alter: func(b *built) { b.chain = b.chain[:len(b.chain)-1] },
			want: map[string]Status{RuleChainRoot: Fail}},
		{name: "four certificates", spec: chainSpec{extraCAs: 1}, want: map[string]Status{RuleChainLength: Warn}},
		{name: "five certificates", spec: chainSpec{extraCAs: 2}, want: map[string]Status{RuleChainLength: Fail}},
		{name: "1024-bit leaf", spec: chainSpec{leafBits: 1024}, want: map[string]Status{RuleKeySize: Fail}},
		{name: "4096-bit intermediate", spec: chainSpec{midBits: 4096}, want: map[string]Status{RuleKeySize: Fail}},
		{name: "4096-bit leaf", spec: chainSpec{leafBits: 4096}, want: map[string]Status{RuleKeySize: Fail}},
		{name: "4096-bit leaf for AMT 11", spec: chainSpec{leafBits: 4096}, major: 11, want: map[string]Status{RuleKeySize: Fail}},
		{name: "SHA-1 signed leaf", spec: chainSpec{leafSig: x509.SHA1WithRSA}, want: map[string]Status{RuleSignature: Fail, RuleChainOrder: Pass}},
		{name: "SHA-1 signed leaf for AMT 11", spec: chainSpec{leafSig: x509.SHA1WithRSA}, major: 11, want: map[string]Status{RuleSignature: Warn}},
		{name: "SHA-1 signed leaf for AMT 16", spec: chainSpec{leafSig: x509.SHA1WithRSA}, major: 16, want: map[string]Status{RuleSignature: Fail}},
		{name: "1024-bit leaf for AMT 11", spec: chainSpec{leafBits: 1024}, major: 11, want: map[string]Status{RuleKeySize: Warn}},
		{name: "cert for another domain", spec: chainSpec{cn: "setup.other.org"}, want: map[string]Status{RuleDomain: Fail}},
		{name: "cert for the parent domain", spec: chainSpec{cn: "setup.example.com"}, want: map[string]Status{RuleDomain: Warn}},
		{name: "cert within the site domain", spec: chainSpec{cn: "prov.branch1.example.com"}, want: map[string]Status{RuleDomain: Pass}},
		{name: "cert for a sibling sub-domain", spec: chainSpec{cn: "setup.corp.example.com"}, want: map[string]Status{RuleDomain: Warn}},
		{name: "wildcard CN", spec: chainSpec{cn: "*.branch1.example.com"}, want: map[string]Status{RuleDomain: Fail}},
		{name: "no CN", spec: chainSpec{cn: " ", leafTmpl: func(c *x509.Certificate) { c.Subject.CommonName = "" }}, want: map[string]Status{RuleDomain: Fail}},
		{name: "expired", spec: chainSpec{validity: [2]time.Time{now.AddDate(-2, 0, 0), now.AddDate(0, 0, -1)}}, want: map[string]Status{RuleValidity: Fail}},
		{name: "expired for AMT 3", spec: chainSpec{validity: [2]time.Time{now.AddDate(-2, 0, 0), now.AddDate(0, 0, -1)}}, major: 3, want: map[string]Status{RuleValidity: Warn}},
		{name: "not yet valid", spec: chainSpec{validity: [2]time.Time{now.AddDate(0, 0, 1), now.AddDate(1, 0, 0)}}, want: map[string]Status{RuleValidity: Fail}},
		{name: "expires in a week", spec: chainSpec{validity: [2]time.Time{now.AddDate(0, -1, 0), now.AddDate(0, 0, 7)}}, want: map[string]Status{RuleValidity: Warn}},
		{name: "key of another certificate", alter: func(b *built) { b.leafKey = key(t, 2048, "other") }, want: map[string]Status{RuleKeyMatch: Fail}},
		{name: "no domain given", domain: "-", want: map[string]Status{RuleDomain: Warn}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := build(t, c.spec)
			if c.alter != nil {
				c.alter(&b)
			}
			domain := site
			if c.domain == "-" {
				domain = ""
			}
			results := Check(Input{Chain: b.chain, Key: b.leafKey, Domain: domain, Now: now, AMTMajor: c.major})
			got := map[string]Status{}
			for _, r := range results {
				got[r.Rule] = r.Status
				if r.Reason == "" {
					t.Errorf("%s has no reason", r.Rule)
				}
				if _, listed := c.want[r.Rule]; r.Status == Fail && !listed {
					t.Errorf("unexpected %s", r)
				}
			}
			for rule, st := range c.want {
				if got[rule] != st {
					t.Errorf("%s = %s, want %s; results:\n%s", rule, got[rule], st, dump(results))
				}
			}
		})
	}
}

func dump(rs []Result) string {
	var s string
	for _, r := range rs {
		s += r.String() + "\n"
	}
	return s
}

func TestCheckPEM(t *testing.T) {
	b := build(t, chainSpec{})
	var chainPEM []byte
	for _, c := range b.chain {
		chainPEM = append(chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(b.leafKey)})
	rs := CheckPEM("branch1.example.com", chainPEM, keyPEM, now)
	if Failed(rs) {
		t.Fatalf("good chain failed:\n%s", dump(rs))
	}
	if rs[0].Rule != RuleParse || rs[0].Status != Pass {
		t.Errorf("first result %v", rs[0])
	}
	for _, bad := range [][]byte{nil, []byte("not pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}})} {
		rs := CheckPEM("x.example.com", bad, nil, now)
		if len(rs) != 1 || rs[0].Rule != RuleParse || rs[0].Status != Fail {
			t.Errorf("CheckPEM(%q) = %v", bad, rs)
		}
	}
	if rs := CheckPEM("x.example.com", chainPEM, []byte("junk"), now); !Failed(rs) {
		t.Error("junk key accepted")
	}
}

func TestDomainMatch(t *testing.T) {
	cases := []struct {
		cn, suffix string
		major      int
		want       Match
	}{
		{"setup.example.com", "example.com", 0, Exact},
		{"Setup.Branch1.Example.COM", "branch1.example.com.", 0, Exact},
		{"example.com", "example.com", 0, Exact},
		{"setup.example.com", "branch1.example.com", 0, Registrable},
		{"example.com", "a.example.com", 0, Registrable},
		{"setup.corp.example.com", "branch1.example.com", 2, Registrable},
		{"setup.corp.example.org", "branch1.example.org", 0, Registrable},
		{"setup.corp.example.org", "branch1.example.org", 3, NoMatch},
		{"setup.example.co.uk", "shop.example.co.uk", 0, Registrable},
		{"setup.example.co.uk", "shop.example.co.uk", 2, NoMatch},
		{"setup.other.co.uk", "example.co.uk", 0, NoMatch},
		{"setup.example.xyz", "branch1.example.xyz", 0, NoMatch},
		{"setup.example.com", "example.net", 0, NoMatch},
		{"setup.example.com", "notexample.com", 0, NoMatch},
		{"", "example.com", 0, NoMatch},
		{"setup.example.com", "", 0, NoMatch},
		{"setup.com", "other.com", 0, NoMatch},
	}
	for _, c := range cases {
		if got := DomainMatch(c.cn, c.suffix, c.major); got != c.want {
			t.Errorf("DomainMatch(%q, %q, %d) = %d, want %d", c.cn, c.suffix, c.major, got, c.want)
		}
	}
}

func TestRootHashes(t *testing.T) {
	b := build(t, chainSpec{})
	h := RootHashes(b.chain[len(b.chain)-1])
	for _, in := range []string{"sha256:" + h.SHA256, h.SHA1, "SHA384:" + h.SHA384} {
		if !h.Matches(in) {
			t.Errorf("Matches(%q) = false", in)
		}
	}
	if h.Matches("sha256:00") || h.Matches("") {
		t.Error("matched a foreign hash")
	}
}
