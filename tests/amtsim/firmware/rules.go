package firmware

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"strings"
)

// Rule names one certificate check of amt-protocol.md §4.
type Rule string

const (
	RuleChainPresent  Rule = "chain-present"      // at least one certificate, all parseable
	RuleChainLength   Rule = "chain-length"       // no more than the firmware's maximum
	RuleChainOrder    Rule = "chain-order"        // leaf first, each signed by the next, self-signed root last
	RuleServerAuthEKU Rule = "eku-server-auth"    // leaf EKU contains 1.3.6.1.5.5.7.3.1
	RuleIntelOIDOrOU  Rule = "intel-oid-or-ou"    // leaf EKU has 2.16.840.1.113741.1.2.3 or OU "Intel(R) Client Setup Certificate"
	RuleRootHash      Rule = "root-hash-active"   // root DER hash is an active table entry
	RuleDomainSuffix  Rule = "domain-suffix"      // leaf CN within the device's DNS suffix (per-version rule)
	RuleKeySize       Rule = "key-size"           // RSA sizes per version; leaf key must be RSA
	RuleSHA1          Rule = "no-sha1-signatures" // ME 16+: no SHA-1 signature anywhere
)

// Identifiers the rules look for.
var (
	OIDServerAuth = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	OIDIntelSetup = asn1.ObjectIdentifier{2, 16, 840, 1, 113741, 1, 2, 3}
	IntelSetupOU  = "Intel(R) Client Setup Certificate"
)

// RuleError is a rejection naming the rule that failed.
type RuleError struct {
	Rule   Rule
	Detail string
}

func (e *RuleError) Error() string {
	return fmt.Sprintf("certificate rule %s failed: %s", e.Rule, e.Detail)
}

func fail(r Rule, format string, a ...any) error {
	return &RuleError{Rule: r, Detail: fmt.Sprintf(format, a...)}
}

// FailedRule extracts the rule from an error returned by CheckChain.
func FailedRule(err error) (Rule, bool) {
	var re *RuleError
	if errors.As(err, &re) {
		return re.Rule, true
	}
	return "", false
}

// ParseChain parses DER certificates as presented (leaf first).
func ParseChain(raw [][]byte) ([]*x509.Certificate, error) {
	if len(raw) == 0 {
		return nil, fail(RuleChainPresent, "no client certificate presented")
	}
	out := make([]*x509.Certificate, 0, len(raw))
	for i, der := range raw {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fail(RuleChainPresent, "certificate %d does not parse: %v", i, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// CheckChain applies every firmware rule to a provisioning chain. suffix is the
// device's trusted DNS suffix (PKI suffix, else DHCP option 15).
func CheckChain(p Profile, table *HashTable, suffix string, chain []*x509.Certificate) error {
	if err := CheckChainStructure(p, table, chain); err != nil {
		return err
	}
	return CheckDomain(p, suffix, chain[0])
}

// CheckChainStructure applies every rule except the domain match; host-based
// setup checks the domain only at AdminSetup time.
func CheckChainStructure(p Profile, table *HashTable, chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return fail(RuleChainPresent, "no client certificate presented")
	}
	if len(chain) > p.MaxChainLength {
		return fail(RuleChainLength, "%d certificates, AMT %s accepts at most %d", len(chain), p.Name, p.MaxChainLength)
	}
	if err := checkOrder(chain); err != nil {
		return err
	}
	leaf, root := chain[0], chain[len(chain)-1]
	if !hasEKU(leaf, OIDServerAuth, x509.ExtKeyUsageServerAuth) {
		return fail(RuleServerAuthEKU, "leaf %q has no serverAuth extended key usage", leaf.Subject.CommonName)
	}
	if !hasEKU(leaf, OIDIntelSetup, -1) && !hasOU(leaf, IntelSetupOU) {
		return fail(RuleIntelOIDOrOU, "leaf %q has neither EKU %s nor OU %q", leaf.Subject.CommonName, OIDIntelSetup, IntelSetupOU)
	}
	if err := checkSignatures(p, chain); err != nil {
		return err
	}
	if err := checkKeys(p, chain); err != nil {
		return err
	}
	if _, ok := table.MatchActive(root.Raw); !ok {
		return fail(RuleRootHash, "root %q: SHA-1 %x / SHA-256 %x is not an active entry of the hash table",
			root.Subject.CommonName, Digest(1, root.Raw), Digest(2, root.Raw))
	}
	return nil
}

func checkOrder(chain []*x509.Certificate) error {
	for i := 0; i+1 < len(chain); i++ {
		child, parent := chain[i], chain[i+1]
		if !bytes.Equal(child.RawIssuer, parent.RawSubject) {
			return fail(RuleChainOrder, "certificate %d (%q) is not issued by certificate %d (%q)",
				i, child.Subject.CommonName, i+1, parent.Subject.CommonName)
		}
		if err := VerifySignature(child, parent); err != nil {
			return fail(RuleChainOrder, "certificate %d (%q) signature does not verify with certificate %d: %v", i, child.Subject.CommonName, i+1, err)
		}
		if !parent.IsCA {
			return fail(RuleChainOrder, "certificate %d (%q) issues certificate %d but is not a CA", i+1, parent.Subject.CommonName, i)
		}
	}
	root := chain[len(chain)-1]
	if !bytes.Equal(root.RawIssuer, root.RawSubject) || VerifySignature(root, root) != nil {
		return fail(RuleChainOrder, "last certificate %q is not a self-signed root", root.Subject.CommonName)
	}
	return nil
}

func checkSignatures(p Profile, chain []*x509.Certificate) error {
	if p.AllowSHA1Signatures {
		return nil
	}
	for i, c := range chain {
		switch c.SignatureAlgorithm {
		case x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.DSAWithSHA1:
			return fail(RuleSHA1, "certificate %d (%q) is signed with %s; AMT %s refuses SHA-1", i, c.Subject.CommonName, c.SignatureAlgorithm, p.Name)
		}
	}
	return nil
}

func checkKeys(p Profile, chain []*x509.Certificate) error {
	leafKey, ok := chain[0].PublicKey.(*rsa.PublicKey)
	if !ok {
		return fail(RuleKeySize, "leaf key is %T; the AdminSetup signature needs RSA", chain[0].PublicKey)
	}
	if p.MaxLeafRSABits > 0 && leafKey.N.BitLen() > p.MaxLeafRSABits {
		return fail(RuleKeySize, "leaf RSA key is %d bits; AMT %s accepts at most %d", leafKey.N.BitLen(), p.Name, p.MaxLeafRSABits)
	}
	for i, c := range chain {
		if k, ok := c.PublicKey.(*rsa.PublicKey); ok && k.N.BitLen() < p.MinRSABits {
			return fail(RuleKeySize, "certificate %d (%q) RSA key is %d bits; AMT %s needs at least %d", i, c.Subject.CommonName, k.N.BitLen(), p.Name, p.MinRSABits)
		}
	}
	return nil
}

func hasEKU(c *x509.Certificate, oid asn1.ObjectIdentifier, known x509.ExtKeyUsage) bool {
	for _, u := range c.UnknownExtKeyUsage {
		if u.Equal(oid) {
			return true
		}
	}
	if known >= 0 {
		for _, u := range c.ExtKeyUsage {
			if u == known {
				return true
			}
		}
	}
	return false
}

func hasOU(c *x509.Certificate, ou string) bool {
	for _, o := range c.Subject.OrganizationalUnit {
		if o == ou {
			return true
		}
	}
	return false
}

// VerifySignature checks that parent's key signed child. It does its own
// hashing because crypto/x509 no longer verifies SHA-1 signatures, which old
// firmware accepts.
func VerifySignature(child, parent *x509.Certificate) error {
	var h crypto.Hash
	switch child.SignatureAlgorithm {
	case x509.SHA1WithRSA, x509.ECDSAWithSHA1:
		h = crypto.SHA1
	case x509.SHA256WithRSA, x509.ECDSAWithSHA256, x509.SHA256WithRSAPSS:
		h = crypto.SHA256
	case x509.SHA384WithRSA, x509.ECDSAWithSHA384, x509.SHA384WithRSAPSS:
		h = crypto.SHA384
	case x509.SHA512WithRSA, x509.ECDSAWithSHA512, x509.SHA512WithRSAPSS:
		h = crypto.SHA512
	default:
		return fmt.Errorf("unsupported signature algorithm %s", child.SignatureAlgorithm)
	}
	d := h.New()
	d.Write(child.RawTBSCertificate)
	sum := d.Sum(nil)
	switch k := parent.PublicKey.(type) {
	case *rsa.PublicKey:
		switch child.SignatureAlgorithm {
		case x509.SHA256WithRSAPSS, x509.SHA384WithRSAPSS, x509.SHA512WithRSAPSS:
			return rsa.VerifyPSS(k, h, sum, child.Signature, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}
		return rsa.VerifyPKCS1v15(k, h, sum, child.Signature)
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, sum, child.Signature) {
			return errors.New("ECDSA signature invalid")
		}
		return nil
	}
	return fmt.Errorf("unsupported issuer key %T", parent.PublicKey)
}

// CheckDomain applies the version's domain-suffix rule (§4.1) to the leaf CN.
func CheckDomain(p Profile, suffix string, leaf *x509.Certificate) error {
	cn := normalizeName(leaf.Subject.CommonName)
	dev := normalizeName(suffix)
	if dev == "" {
		return fail(RuleDomainSuffix, "device has no trusted DNS suffix (no PKI suffix, no DHCP option 15)")
	}
	if strings.HasPrefix(cn, "*.") {
		// Firmware acceptance of wildcard CNs is unknown (§4.1); refusing is the
		// safe side for an oracle.
		return fail(RuleDomainSuffix, "leaf CN %q is a wildcard", leaf.Subject.CommonName)
	}
	if DomainMatches(p, dev, cn) {
		return nil
	}
	return fail(RuleDomainSuffix, "leaf CN %q does not match device DNS suffix %q under the AMT %s rule", leaf.Subject.CommonName, suffix, p.Name)
}

// DomainMatches reports whether certificate name cn is acceptable for device
// suffix dev (both normalised): cn within dev, or dev within cn reduced to its
// registrable part (last two labels for the version's 2-label TLDs, three for
// its 3-label TLDs).
func DomainMatches(p Profile, dev, cn string) bool {
	if cn == dev || strings.HasSuffix(cn, "."+dev) {
		return true
	}
	labels := strings.Split(cn, ".")
	tld := labels[len(labels)-1]
	keep := 0
	if contains(p.TwoLabelTLDs, tld) {
		keep = 2
	} else if contains(p.ThreeLabelTLDs, tld) {
		keep = 3
	}
	if keep == 0 || len(labels) < keep {
		return false
	}
	reduced := strings.Join(labels[len(labels)-keep:], ".")
	return dev == reduced || strings.HasSuffix(dev, "."+reduced)
}

func normalizeName(s string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
