package firmware

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/branchbox/branchbox/tests/amtsim/certgen"
	"github.com/branchbox/branchbox/tests/amtsim/hello"
)

type rootTrust int

const (
	trustSHA256 rootTrust = iota // custom active SHA-256 (SHA-1 on SHA-1-only firmware)
	trustSHA384
	trustSHA1
	trustNone
	trustInactive
)

func leafWith(cn string, mod func(*certgen.Spec)) certgen.Spec {
	s := certgen.Leaf(cn)
	if mod != nil {
		mod(&s)
	}
	return s
}

func std(leaf certgen.Spec) []certgen.Spec {
	return []certgen.Spec{leaf, certgen.CA("Test Issuing CA"), certgen.CA("Test Root CA")}
}

func TestCheckChain(t *testing.T) {
	noEKU := func(s *certgen.Spec) { s.EKU = nil }
	onlyServerAuth := func(s *certgen.Spec) { s.UnknownEKU = nil }
	ouInstead := func(s *certgen.Spec) { s.UnknownEKU = nil; s.OU = []string{"Intel(R) Client Setup Certificate"} }
	ouWrongCase := func(s *certgen.Spec) { s.UnknownEKU = nil; s.OU = []string{"intel(r) client setup certificate"} }
	bits := func(n int) func(*certgen.Spec) { return func(s *certgen.Spec) { s.Bits = n } }
	ecdsaLeaf := func(s *certgen.Spec) { s.ECDSA = true }
	leaf := func(cn string) certgen.Spec { return certgen.Leaf(cn) }
	sha1Int := certgen.CA("SHA-1 Issuing CA")
	sha1Int.SigAlg = x509.SHA1WithRSA
	weakInt := certgen.CA("1024-bit Issuing CA")
	weakInt.Bits = 1024
	wrongIssuer := certgen.CA("Test Issuing CA")
	wrongIssuer.Issuer = -1 // self-signed, so the leaf's signature does not verify against it

	tests := []struct {
		name    string
		version string
		suffix  string
		specs   []certgen.Spec
		trust   rootTrust
		want    Rule // "" = accepted
	}{
		// Baseline on every profile.
		{"baseline 2.6", "2.6", "example.com", std(leaf("host.example.com")), trustSHA1, ""},
		{"baseline 3.0", "3.0", "example.com", std(leaf("host.example.com")), trustSHA1, ""},
		{"baseline 11", "11.8", "example.com", std(leaf("host.example.com")), trustSHA256, ""},
		{"baseline 16", "16.1", "example.com", std(leaf("host.example.com")), trustSHA256, ""},

		// chain-length
		{"4 certs accepted", "16", "example.com", []certgen.Spec{leaf("h.example.com"), certgen.CA("I1"), certgen.CA("I2"), certgen.CA("R")}, trustSHA256, ""},
		{"5 certs refused", "16", "example.com", []certgen.Spec{leaf("h.example.com"), certgen.CA("I1"), certgen.CA("I2"), certgen.CA("I3"), certgen.CA("R")}, trustSHA256, RuleChainLength},

		// chain-order
		{"leaf and root only", "16", "example.com", []certgen.Spec{leaf("h.example.com"), certgen.CA("R")}, trustSHA256, ""},
		{"intermediate not issued by root", "16", "example.com", []certgen.Spec{leaf("h.example.com"), wrongIssuer, certgen.CA("R")}, trustSHA256, RuleChainOrder},

		// eku-server-auth
		{"no serverAuth", "16", "example.com", std(leafWith("h.example.com", noEKU)), trustSHA256, RuleServerAuthEKU},

		// intel-oid-or-ou
		{"OID present", "16", "example.com", std(leaf("h.example.com")), trustSHA256, ""},
		{"OU instead of OID", "16", "example.com", std(leafWith("h.example.com", ouInstead)), trustSHA256, ""},
		{"neither OID nor OU", "16", "example.com", std(leafWith("h.example.com", onlyServerAuth)), trustSHA256, RuleIntelOIDOrOU},
		{"OU in wrong case", "16", "example.com", std(leafWith("h.example.com", ouWrongCase)), trustSHA256, RuleIntelOIDOrOU},

		// root-hash-active
		{"root SHA-384 active", "16", "example.com", std(leaf("h.example.com")), trustSHA384, ""},
		{"root SHA-1 on 11", "11", "example.com", std(leaf("h.example.com")), trustSHA1, ""},
		{"root not in table", "16", "example.com", std(leaf("h.example.com")), trustNone, RuleRootHash},
		{"root hash inactive", "16", "example.com", std(leaf("h.example.com")), trustInactive, RuleRootHash},

		// domain-suffix, per version (§4.1)
		{"CN equals suffix", "16", "example.com", std(leaf("example.com")), trustSHA256, ""},
		{"CN in other domain", "16", "example.com", std(leaf("host.other.com")), trustSHA256, RuleDomainSuffix},
		{"case and trailing dot", "16", "Example.COM.", std(leaf("HOST.example.com")), trustSHA256, ""},
		{"wildcard CN", "16", "example.com", std(leaf("*.example.com")), trustSHA256, RuleDomainSuffix},
		{"2.6 sibling .com", "2.6", "a.intel.com", std(leaf("b.intel.com")), trustSHA1, ""},
		{"2.6 sibling .org refused", "2.6", "a.example.org", std(leaf("b.example.org")), trustSHA1, RuleDomainSuffix},
		{"11 sibling .org", "11", "a.example.org", std(leaf("b.example.org")), trustSHA256, ""},
		{"3.0 co.uk refused", "3.0", "branch.example.co.uk", std(leaf("prov.example.co.uk")), trustSHA1, RuleDomainSuffix},
		{"16 co.uk third level", "16", "branch.example.co.uk", std(leaf("prov.example.co.uk")), trustSHA256, ""},
		{"16 co.uk other registrant", "16", "branch.example.co.uk", std(leaf("prov.other.co.uk")), trustSHA256, RuleDomainSuffix},
		{"no suffix known", "16", "", std(leaf("h.example.com")), trustSHA256, RuleDomainSuffix},

		// key-size
		{"1024-bit intermediate on 11", "11", "example.com", []certgen.Spec{leaf("h.example.com"), weakInt, certgen.CA("R")}, trustSHA256, ""},
		{"1024-bit intermediate on 16", "16", "example.com", []certgen.Spec{leaf("h.example.com"), weakInt, certgen.CA("R")}, trustSHA256, RuleKeySize},
		{"3072-bit leaf on 16", "16", "example.com", std(leafWith("h.example.com", bits(3072))), trustSHA256, RuleKeySize},
		{"3072-bit leaf on 11", "11", "example.com", std(leafWith("h.example.com", bits(3072))), trustSHA256, RuleKeySize},
		{"ECDSA leaf", "16", "example.com", std(leafWith("h.example.com", ecdsaLeaf)), trustSHA256, RuleKeySize},

		// no-sha1-signatures
		{"SHA-1 intermediate on 11", "11", "example.com", []certgen.Spec{leaf("h.example.com"), sha1Int, certgen.CA("R")}, trustSHA256, ""},
		{"SHA-1 intermediate on 16", "16", "example.com", []certgen.Spec{leaf("h.example.com"), sha1Int, certgen.CA("R")}, trustSHA256, RuleSignatureHash},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Lookup(tc.version)
			if err != nil {
				t.Fatal(err)
			}
			chain, err := certgen.Build(tc.specs...)
			if err != nil {
				t.Fatal(err)
			}
			table := trustedTable(t, p, chain.Root().Raw, tc.trust)
			err = CheckChain(p, table, tc.suffix, time.Now(), chain.Certs)
			got, _ := FailedRule(err)
			if err != nil && got == "" {
				t.Fatalf("error without a rule: %v", err)
			}
			if got != tc.want {
				t.Fatalf("rule %q (err %v), want %q", got, err, tc.want)
			}
			if err != nil {
				t.Logf("rejected as expected: %v", err)
			}
		})
	}
}

func TestReversedChainFailsOrder(t *testing.T) {
	p, _ := Lookup("16")
	chain, err := certgen.Build(std(certgen.Leaf("h.example.com"))...)
	if err != nil {
		t.Fatal(err)
	}
	table := trustedTable(t, p, chain.Root().Raw, trustSHA256)
	reversed := []*x509.Certificate{chain.Certs[2], chain.Certs[1], chain.Certs[0]}
	if r, _ := FailedRule(CheckChain(p, table, "example.com", time.Now(), reversed)); r != RuleChainOrder {
		t.Fatalf("reversed chain: rule %q", r)
	}
	noRoot := chain.Certs[:2]
	if r, _ := FailedRule(CheckChain(p, table, "example.com", time.Now(), noRoot)); r != RuleChainComplete {
		t.Fatalf("chain without root: rule %q", r)
	}
	if r, _ := FailedRule(CheckChain(p, table, "example.com", time.Now(), nil)); r != RuleChainPresent {
		t.Fatalf("empty chain: rule %q", r)
	}
	if _, err := ParseChain([][]byte{{1, 2, 3}}); err == nil {
		t.Fatal("garbage parsed")
	}
}

func trustedTable(t *testing.T, p Profile, rootDER []byte, trust rootTrust) *HashTable {
	t.Helper()
	table, err := NewHashTable(p)
	if err != nil {
		t.Fatal(err)
	}
	alg := hello.SHA256
	switch trust {
	case trustNone:
		return table
	case trustSHA384:
		alg = hello.SHA384
	case trustSHA1:
		alg = hello.SHA1
	}
	if !p.allowsAlg(alg) {
		alg = hello.SHA1
	}
	if err := table.AddCustom(p, "test root", alg, Digest(alg, rootDER), trust != trustInactive); err != nil {
		t.Fatal(err)
	}
	return table
}

func TestHashTable(t *testing.T) {
	p16, _ := Lookup("16.1")
	table, err := NewHashTable(p16)
	if err != nil {
		t.Fatal(err)
	}
	if len(table.Active()) != 23 {
		t.Fatalf("16.x default table has %d active hashes, want 23", len(table.Active()))
	}
	if err := table.AddCustom(p16, "sha1", hello.SHA1, make([]byte, 20), true); err == nil {
		t.Fatal("16.x accepted a SHA-1 custom hash")
	}
	for i := 0; i < p16.CustomCapacity; i++ {
		if err := table.AddCustom(p16, "c", hello.SHA256, []byte{byte(i), 31: 1}, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := table.AddCustom(p16, "one too many", hello.SHA256, []byte{9, 31: 9}, true); err == nil {
		t.Fatal("custom capacity not enforced")
	}
	table.RemoveCustom()
	if len(table.Entries) != 23 {
		t.Fatalf("after RemoveCustom: %d entries", len(table.Entries))
	}
	p2, _ := Lookup("2.6")
	legacy, err := NewHashTable(p2)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range legacy.Active() {
		if h.Alg != hello.SHA1 {
			t.Fatalf("2.6 table holds %s", h.Alg)
		}
	}
	if _, err := Lookup("7.0"); err == nil {
		t.Fatal("unsupported version accepted")
	}
}
