package firmware

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Rule names one certificate check of amt-protocol.md §4. The names are the
// ones the provisioner's pre-flight check (`branchbox cert check`) prints:
// both implementations are tested against one table of cases
// (tests/certcases), and the simulator keeps its own code so that a
// misreading of the spec cannot hide on both sides.
type Rule string

const (
	RuleChainPresent  Rule = "parse"          // at least one certificate, all parseable
	RuleChainLength   Rule = "chain-length"   // no more than the firmware's maximum
	RuleKeySize       Rule = "key-size"       // RSA sizes per version, every certificate; leaf key must be RSA
	RuleSignatureHash Rule = "signature-hash" // no MD5 anywhere; ME 16+: no SHA-1 either
	RuleChainOrder    Rule = "chain-order"    // leaf first, each signed by the next
	RuleChainComplete Rule = "chain-complete" // the last certificate is a self-signed root
	RuleServerAuthEKU Rule = "server-auth"    // leaf EKU contains 1.3.6.1.5.5.7.3.1
	RuleIntelOIDOrOU  Rule = "setup-purpose"  // leaf EKU has 2.16.840.1.113741.1.2.3 or OU "Intel(R) Client Setup Certificate"
	RuleValidity      Rule = "validity"       // every certificate within its dates, on firmware that checks them
	RuleRootHash      Rule = "root-hash"      // root DER hash is an active table entry
	RuleDomainSuffix  Rule = "domain-suffix"  // leaf CN within the device's DNS suffix (per-version rule)
	RuleKeyMatch      Rule = "key-match"      // the client proves it holds the leaf's key (TLS CertificateVerify)
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

// Fail is a rejection of rule r; transports use it for the rules they
// enforce themselves (key-match is the TLS handshake's).
func Fail(r Rule, format string, a ...any) error {
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
		return nil, Fail(RuleChainPresent, "no client certificate presented")
	}
	out := make([]*x509.Certificate, 0, len(raw))
	for i, der := range raw {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, Fail(RuleChainPresent, "certificate %d does not parse: %v", i, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// CheckChain applies every firmware rule to a provisioning chain. suffix is the
// device's trusted DNS suffix (PKI suffix, else DHCP option 15); now is the
// device's own clock.
func CheckChain(p Profile, table *HashTable, suffix string, now time.Time, chain []*x509.Certificate) error {
	if err := CheckChainStructure(p, table, now, chain); err != nil {
		return err
	}
	return CheckDomain(p, suffix, chain[0])
}

// CheckChainStructure applies every rule except the domain match; host-based
// setup checks the domain only at AdminSetup time.
func CheckChainStructure(p Profile, table *HashTable, now time.Time, chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return Fail(RuleChainPresent, "no client certificate presented")
	}
	if len(chain) > p.MaxChainLength {
		return Fail(RuleChainLength, "%d certificates, AMT %s accepts at most %d", len(chain), p.Name, p.MaxChainLength)
	}
	// Keys and signature algorithms first: the firmware's verifier cannot
	// even check a link made with an algorithm it lacks.
	if err := checkKeys(p, chain); err != nil {
		return err
	}
	if err := checkSignatures(p, chain); err != nil {
		return err
	}
	if err := checkOrder(chain); err != nil {
		return err
	}
	leaf, root := chain[0], chain[len(chain)-1]
	if !hasEKU(leaf, OIDServerAuth, x509.ExtKeyUsageServerAuth) {
		return Fail(RuleServerAuthEKU, "leaf %q has no serverAuth extended key usage", leaf.Subject.CommonName)
	}
	if !hasEKU(leaf, OIDIntelSetup, -1) && !hasOU(leaf, IntelSetupOU) {
		return Fail(RuleIntelOIDOrOU, "leaf %q has neither EKU %s nor OU %q", leaf.Subject.CommonName, OIDIntelSetup, IntelSetupOU)
	}
	if err := checkValidity(p, now, chain); err != nil {
		return err
	}
	if _, ok := table.MatchActive(root.Raw); !ok {
		return Fail(RuleRootHash, "root %q: SHA-1 %x / SHA-256 %x is not an active entry of the hash table",
			root.Subject.CommonName, Digest(1, root.Raw), Digest(2, root.Raw))
	}
	return nil
}

func checkOrder(chain []*x509.Certificate) error {
	for i := 0; i+1 < len(chain); i++ {
		child, parent := chain[i], chain[i+1]
		if !bytes.Equal(child.RawIssuer, parent.RawSubject) {
			return Fail(RuleChainOrder, "certificate %d (%q) is not issued by certificate %d (%q)",
				i, child.Subject.CommonName, i+1, parent.Subject.CommonName)
		}
		if err := VerifySignature(child, parent); err != nil {
			return Fail(RuleChainOrder, "certificate %d (%q) signature does not verify with certificate %d: %v", i, child.Subject.CommonName, i+1, err)
		}
		if !parent.IsCA {
			return Fail(RuleChainOrder, "certificate %d (%q) issues certificate %d but is not a CA", i+1, parent.Subject.CommonName, i)
		}
	}
	root := chain[len(chain)-1]
	if !bytes.Equal(root.RawIssuer, root.RawSubject) || VerifySignature(root, root) != nil {
		return Fail(RuleChainComplete, "last certificate %q is not a self-signed root", root.Subject.CommonName)
	}
	return nil
}

func checkSignatures(p Profile, chain []*x509.Certificate) error {
	for i, c := range chain {
		switch c.SignatureAlgorithm {
		case x509.MD2WithRSA, x509.MD5WithRSA:
			return Fail(RuleSignatureHash, "certificate %d (%q) is signed with %s", i, c.Subject.CommonName, c.SignatureAlgorithm)
		case x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.DSAWithSHA1:
			if !p.AllowSHA1Signatures {
				return Fail(RuleSignatureHash, "certificate %d (%q) is signed with %s; AMT %s refuses SHA-1", i, c.Subject.CommonName, c.SignatureAlgorithm, p.Name)
			}
		}
	}
	return nil
}

// checkKeys bounds every RSA key in the chain, the leaf's included: the
// firmware's small processor verifies the whole chain itself and supports
// RSA up to 2048 bits (amt-protocol.md §4 "Key size" [X]; issue 12, from the
// seed's RCFG discussion). ECDSA issuers are accepted: no source says
// otherwise, and the pre-flight check only warns about them.
func checkKeys(p Profile, chain []*x509.Certificate) error {
	if _, ok := chain[0].PublicKey.(*rsa.PublicKey); !ok {
		return Fail(RuleKeySize, "leaf key is %s; the firmware supports RSA leaf keys only", keyType(chain[0].PublicKey))
	}
	for i, c := range chain {
		switch k := c.PublicKey.(type) {
		case *rsa.PublicKey:
			bits := k.N.BitLen()
			if bits < p.MinRSABits || bits > p.MaxRSABits {
				accepts := fmt.Sprintf("%d to %d", p.MinRSABits, p.MaxRSABits)
				if p.MinRSABits == p.MaxRSABits {
					accepts = fmt.Sprintf("only %d", p.MaxRSABits)
				}
				return Fail(RuleKeySize, "certificate %d (%q) RSA key is %d bits; AMT %s accepts %s", i, c.Subject.CommonName, bits, p.Name, accepts)
			}
		case *ecdsa.PublicKey:
		default:
			return Fail(RuleKeySize, "certificate %d (%q) key is %s, which AMT %s does not support", i, c.Subject.CommonName, keyType(c.PublicKey), p.Name)
		}
	}
	return nil
}

func keyType(k any) string {
	switch k := k.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", k)
}

// checkValidity compares every certificate's dates with the device clock on
// firmware that keeps one it trusts at setup time. AMT keeps a protected
// real-time clock for "date/time checks required for TLS"; from AMT 6.0 it is
// synchronised with the BIOS clock before configuration, whereas before 6.0
// it had to be set remotely during configuration — after the TLS session
// that needs it — "or the configuration will not succeed" (Intel, "Keeping
// time with Intel AMT", 2010). So profiles 11 and 16 enforce dates [X: the
// clock's role in TLS is documented, the exact check is inferred]; 2.6 and
// 3.0 cannot, and accept an expired chain [U].
func checkValidity(p Profile, now time.Time, chain []*x509.Certificate) error {
	if !p.ChecksValidity {
		return nil
	}
	for i, c := range chain {
		if now.Before(c.NotBefore) {
			return Fail(RuleValidity, "certificate %d (%q) is not valid before %s (device clock %s)", i, c.Subject.CommonName, c.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
		if now.After(c.NotAfter) {
			return Fail(RuleValidity, "certificate %d (%q) expired %s (device clock %s)", i, c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
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
		return Fail(RuleDomainSuffix, "device has no trusted DNS suffix (no PKI suffix, no DHCP option 15)")
	}
	if strings.HasPrefix(cn, "*.") {
		// Firmware acceptance of wildcard CNs is unknown (§4.1); refusing is the
		// safe side for an oracle.
		return Fail(RuleDomainSuffix, "leaf CN %q is a wildcard", leaf.Subject.CommonName)
	}
	if DomainMatches(p, dev, cn) {
		return nil
	}
	return Fail(RuleDomainSuffix, "leaf CN %q does not match device DNS suffix %q under the AMT %s rule", leaf.Subject.CommonName, suffix, p.Name)
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
