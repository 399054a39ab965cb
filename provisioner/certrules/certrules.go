// Package certrules applies, ahead of time, every check an Intel AMT device
// makes on a provisioning certificate chain during Remote Configuration
// (amt-protocol.md §4), so a bad chain is reported to the admin with the
// rule a device would reject it for, before any device fails on it.
//
// FAIL means a device of the judged generation refuses the chain; amtsim's
// firmware model is separate code tested against the same table of cases
// (tests/certcases), so FAIL here and a refused TLS session there coincide.
package certrules

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// Status is the verdict of one rule.
type Status string

// Verdicts. FAIL means a device would refuse the chain; WARN means some
// firmware generations or tools would, or the check could not be made.
const (
	Pass Status = "PASS"
	Fail Status = "FAIL"
	Warn Status = "WARN"
)

// Rule names, stable: scripts and tests match on them.
const (
	RuleParse       = "parse"
	RuleSetupOID    = "setup-purpose"
	RuleServerAuth  = "server-auth"
	RuleKeyUsage    = "key-usage"
	RuleChainOrder  = "chain-order"
	RuleChainRoot   = "chain-complete"
	RuleChainLength = "chain-length"
	RuleKeySize     = "key-size"
	RuleSignature   = "signature-hash"
	RuleRootHash    = "root-hash"
	RuleDomain      = "domain-suffix"
	RuleValidity    = "validity"
	RuleKeyMatch    = "key-match"
)

// Object identifiers and the OU string the firmware looks for.
var (
	OIDClientSetup = asn1.ObjectIdentifier{2, 16, 840, 1, 113741, 1, 2, 3}
	SetupOU        = "Intel(R) Client Setup Certificate"
)

// MaxChain is the longest chain known to activate; RPS never builds longer.
const MaxChain = 4

// expirySoon is how far ahead a coming expiry is worth a warning.
const expirySoon = 30 * 24 * time.Hour

// Result is one rule's verdict and the reason for it.
type Result struct {
	Rule   string `json:"rule"`
	Status Status `json:"status"`
	Reason string `json:"reason"`
}

func (r Result) String() string { return fmt.Sprintf("%-4s %-15s %s", r.Status, r.Rule, r.Reason) }

// Input is a chain to check, in the order it will be presented.
type Input struct {
	Chain []*x509.Certificate // leaf first, root last
	// Key is the leaf's private key; nil skips the key-match rule.
	Key crypto.Signer
	// Domain is the site's DHCP option 15 domain, the device's DNS suffix.
	Domain string
	Now    time.Time
	// AMTMajor is the firmware major version when known. Zero means
	// "any device": the rules of current firmware apply.
	AMTMajor int
	// Trusted are the device's active root hashes ("sha256:HEX" or bare
	// hex, as a hello or `rpc amtinfo` lists them). Empty: the root is
	// judged against the default table, and a custom root only warns.
	Trusted []string
}

// Firmware generations whose rules differ (amt-protocol.md §4, §4.1).
const (
	// strictFrom is the first major that rejects SHA-1 anywhere in the
	// chain and RSA keys below 2048 bits (ME 16; some ME 15 too).
	strictFrom = 15
	// clockFrom is the first major whose clock is set before remote
	// configuration (from the BIOS), so certificate dates are checked;
	// earlier firmware had its clock set during configuration, after the
	// TLS session ("Keeping time with Intel AMT", Intel, 2010).
	clockFrom = 6
	// extendedTLDsFrom is the first major matching CNs in more TLDs than
	// .com/.net, third-level (co.uk-style) ones included (AMT 4.1/5.1, P-8/P-9).
	extendedTLDsFrom = 4
)

// minRSABits and maxRSABits bound every RSA key in the chain, root
// included: the firmware verifies the whole chain on its own processor and
// supports RSA up to 2048 bits (§4 "Key size"; older firmware, 1024 at least).
const (
	minRSABitsStrict = 2048
	minRSABitsLegacy = 1024
	maxRSABits       = 2048
)

func judged(major int) int {
	if major == 0 {
		return newest
	}
	return major
}

// newest is the generation "any device" is judged as: current firmware.
const newest = 16

// Failed reports whether any rule failed.
func Failed(results []Result) bool {
	return slices.ContainsFunc(results, func(r Result) bool { return r.Status == Fail })
}

// Failures returns only the failed rules.
func Failures(results []Result) []Result {
	var out []Result
	for _, r := range results {
		if r.Status == Fail {
			out = append(out, r)
		}
	}
	return out
}

// CheckFiles reads a PEM chain and (when keyPath is not empty) a PEM key
// and runs every rule. Unreadable files are reported as rule results so
// callers print one uniform list.
func CheckFiles(domain, chainPath, keyPath string) []Result {
	return CheckFilesFor(Device{}, domain, chainPath, keyPath)
}

// Device is what is known of the devices a chain is judged for.
type Device struct {
	AMTMajor int      // 0: any device
	Trusted  []string // its root hash table; empty: unknown
}

// CheckFilesFor is CheckFiles for particular devices.
func CheckFilesFor(dev Device, domain, chainPath, keyPath string) []Result {
	chainPEM, err := os.ReadFile(chainPath)
	if err != nil {
		return []Result{{RuleParse, Fail, fmt.Sprintf("chain: %v", err)}}
	}
	var keyPEM []byte
	if keyPath != "" {
		if keyPEM, err = os.ReadFile(keyPath); err != nil {
			return []Result{{RuleParse, Fail, fmt.Sprintf("key: %v", err)}}
		}
	}
	return checkPEM(domain, chainPEM, keyPEM, time.Now(), dev)
}

// CheckPEM is CheckFiles on bytes; keyPEM may be nil.
func CheckPEM(domain string, chainPEM, keyPEM []byte, now time.Time) []Result {
	return checkPEM(domain, chainPEM, keyPEM, now, Device{})
}

func checkPEM(domain string, chainPEM, keyPEM []byte, now time.Time, dev Device) []Result {
	chain, err := ParseChain(chainPEM)
	if err != nil {
		return []Result{{RuleParse, Fail, err.Error()}}
	}
	in := Input{Chain: chain, Domain: domain, Now: now, AMTMajor: dev.AMTMajor, Trusted: dev.Trusted}
	parsed := Result{RuleParse, Pass, fmt.Sprintf("%d certificate(s)", len(chain))}
	if keyPEM != nil {
		key, err := ParseKey(keyPEM)
		if err != nil {
			return []Result{{RuleParse, Fail, err.Error()}}
		}
		in.Key = key
		parsed.Reason += " and a private key"
	}
	return append([]Result{parsed}, Check(in)...)
}

// ParseChain decodes every CERTIFICATE block, keeping file order.
func ParseChain(pemBytes []byte) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	rest := pemBytes
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(chain)+1, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block found")
	}
	return chain, nil
}

// ParseKey decodes a PKCS#8, PKCS#1 or SEC 1 private key.
func ParseKey(pemBytes []byte) (crypto.Signer, error) {
	rest := pemBytes
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key block found")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("private key: %w", err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("private key of type %T cannot sign", key)
		}
		return signer, nil
	}
}

// Check runs every rule on a parsed chain.
func Check(in Input) []Result {
	if len(in.Chain) == 0 {
		return []Result{{RuleParse, Fail, "empty chain"}}
	}
	if in.Now.IsZero() {
		in.Now = time.Now()
	}
	leaf := findLeaf(in.Chain)
	return []Result{
		checkSetupPurpose(leaf),
		checkServerAuth(leaf),
		checkKeyUsage(leaf),
		checkOrder(in.Chain),
		checkRoot(in.Chain),
		checkLength(in.Chain),
		checkKeySize(in.Chain, leaf, in.AMTMajor),
		checkSignatures(in.Chain, in.AMTMajor),
		CheckRootHash(in.Chain, in.Trusted),
		checkDomain(leaf, in.Domain, in.AMTMajor),
		checkValidity(in.Chain, in.Now, in.AMTMajor),
		checkKeyMatch(leaf, in.Key),
	}
}

// findLeaf picks the certificate the leaf rules judge: the first one,
// unless that is a CA and exactly one non-CA sits elsewhere — a misordered
// chain is then reported once, by chain-order, not by every leaf rule.
func findLeaf(chain []*x509.Certificate) *x509.Certificate {
	if !chain[0].IsCA {
		return chain[0]
	}
	var leaf *x509.Certificate
	for _, c := range chain {
		if !c.IsCA {
			if leaf != nil {
				return chain[0]
			}
			leaf = c
		}
	}
	if leaf == nil {
		return chain[0]
	}
	return leaf
}

func checkSetupPurpose(leaf *x509.Certificate) Result {
	hasOID := slices.ContainsFunc(leaf.UnknownExtKeyUsage, func(o asn1.ObjectIdentifier) bool { return o.Equal(OIDClientSetup) })
	hasOU := slices.Contains(leaf.Subject.OrganizationalUnit, SetupOU)
	switch {
	case hasOID && hasOU:
		return Result{RuleSetupOID, Pass, "leaf has the Intel setup EKU " + OIDClientSetup.String() + " and OU " + SetupOU}
	case hasOID:
		return Result{RuleSetupOID, Pass, "leaf has the Intel setup EKU " + OIDClientSetup.String()}
	case hasOU:
		return Result{RuleSetupOID, Pass, "leaf has OU " + SetupOU}
	}
	return Result{RuleSetupOID, Fail, fmt.Sprintf("leaf has neither EKU %s nor OU %q (exact, case-sensitive): a plain TLS certificate cannot provision AMT", OIDClientSetup, SetupOU)}
}

func checkServerAuth(leaf *x509.Certificate) Result {
	if slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		return Result{RuleServerAuth, Pass, "leaf EKU includes serverAuth 1.3.6.1.5.5.7.3.1"}
	}
	if len(leaf.ExtKeyUsage) == 0 && len(leaf.UnknownExtKeyUsage) == 0 {
		return Result{RuleServerAuth, Fail, "leaf has no extended key usage; the firmware requires serverAuth 1.3.6.1.5.5.7.3.1"}
	}
	return Result{RuleServerAuth, Fail, "leaf EKU lacks serverAuth 1.3.6.1.5.5.7.3.1, which the firmware requires"}
}

// The leaf's key signs the TLS CertificateVerify, which a key-usage
// extension without digitalSignature forbids (RFC 5280 §4.2.1.3). Whether
// the firmware enforces it is not documented [U] — it already ignores the
// usual client-certificate purpose, as the leaf carries serverAuth — so
// this warns rather than fails.
func checkKeyUsage(leaf *x509.Certificate) Result {
	if leaf.KeyUsage == 0 {
		return Result{RuleKeyUsage, Pass, "no key-usage restriction"}
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return Result{RuleKeyUsage, Warn, "leaf key usage lacks digitalSignature, which signing the TLS handshake needs by RFC 5280; whether firmware checks it is undocumented"}
	}
	return Result{RuleKeyUsage, Pass, "leaf key usage allows digitalSignature"}
}

func checkOrder(chain []*x509.Certificate) Result {
	if chain[0].IsCA && len(chain) > 1 {
		return Result{RuleChainOrder, Fail, fmt.Sprintf("first certificate %q is a CA; the leaf must come first", name(chain[0]))}
	}
	for i := 0; i+1 < len(chain); i++ {
		child, parent := chain[i], chain[i+1]
		if err := signedBy(child, parent); err != nil {
			reason := fmt.Sprintf("certificate %d %q is not signed by the next one, %d %q (%v); order must be leaf, issuers…, root",
				i+1, name(child), i+2, name(parent), err)
			if j := issuerIndex(chain, child); j >= 0 {
				reason = fmt.Sprintf("certificate %d %q is issued by certificate %d %q, not by the next one; order must be leaf, issuers…, root",
					i+1, name(child), j+1, name(chain[j]))
			}
			return Result{RuleChainOrder, Fail, reason}
		}
	}
	return Result{RuleChainOrder, Pass, fmt.Sprintf("each certificate is signed by the next (%d)", len(chain))}
}

func issuerIndex(chain []*x509.Certificate, child *x509.Certificate) int {
	for j, c := range chain {
		if c != child && signedBy(child, c) == nil {
			return j
		}
	}
	return -1
}

func checkRoot(chain []*x509.Certificate) Result {
	last := chain[len(chain)-1]
	if selfSigned(last) {
		return Result{RuleChainRoot, Pass, fmt.Sprintf("ends with self-signed root %q", name(last))}
	}
	return Result{RuleChainRoot, Fail, fmt.Sprintf("ends with %q issued by %q: the root must be included, since the device matches the root's hash", name(last), last.Issuer.String())}
}

func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && signedBy(c, c) == nil
}

// signedBy checks the link child → parent. Go refuses to verify SHA-1
// signatures; such a link still counts when the names chain, because the
// signature-hash rule reports SHA-1 on its own.
func signedBy(child, parent *x509.Certificate) error {
	err := child.CheckSignatureFrom(parent)
	var insecure x509.InsecureAlgorithmError
	if errors.As(err, &insecure) && bytes.Equal(child.RawIssuer, parent.RawSubject) {
		return nil
	}
	return err
}

func checkLength(chain []*x509.Certificate) Result {
	n := len(chain)
	switch {
	case n > MaxChain:
		return Result{RuleChainLength, Fail, fmt.Sprintf("%d certificates; firmware refuses long chains (error 5, chain length exceeded) and none longer than %d is known to work", n, MaxChain)}
	case n == MaxChain:
		return Result{RuleChainLength, Warn, fmt.Sprintf("%d certificates; a 4-certificate chain failed on AMT 16 where 3 worked (rpc-go #413): prefer 3", n)}
	}
	return Result{RuleChainLength, Pass, fmt.Sprintf("%d certificate(s)", n)}
}

// checkKeySize bounds every key in the chain, leaf, issuers and root: the
// firmware supports RSA 2048 (1024 too before ME 15/16) and an RSA leaf.
func checkKeySize(chain []*x509.Certificate, leaf *x509.Certificate, major int) Result {
	if _, ok := leaf.PublicKey.(*rsa.PublicKey); !ok {
		return Result{RuleKeySize, Fail, fmt.Sprintf("leaf %q key is %s; AMT firmware supports RSA leaf keys only", name(leaf), keyType(leaf.PublicKey))}
	}
	var warns []string
	for _, c := range chain {
		switch k := c.PublicKey.(type) {
		case *rsa.PublicKey:
			bits := k.N.BitLen()
			switch {
			case bits > maxRSABits:
				return Result{RuleKeySize, Fail, fmt.Sprintf("%q has a %d-bit RSA key; AMT firmware verifies every certificate of the chain and supports RSA up to %d bits", name(c), bits, maxRSABits)}
			case bits < minRSABitsLegacy:
				return Result{RuleKeySize, Fail, fmt.Sprintf("%q has a %d-bit RSA key; no firmware accepts RSA below %d", name(c), bits, minRSABitsLegacy)}
			case bits < minRSABitsStrict && judged(major) >= strictFrom:
				return Result{RuleKeySize, Fail, fmt.Sprintf("%q has a %d-bit RSA key; ME 15/16+ firmware rejects RSA below %d", name(c), bits, minRSABitsStrict)}
			case bits < minRSABitsStrict:
				warns = append(warns, fmt.Sprintf("%q has a %d-bit RSA key: AMT %d accepts it, ME 15/16+ firmware does not", name(c), bits, major))
			}
		case *ecdsa.PublicKey:
			warns = append(warns, fmt.Sprintf("%q has an ECDSA %s key (provisioning chains are RSA 2048 in every documented deployment)", name(c), k.Curve.Params().Name))
		default:
			return Result{RuleKeySize, Fail, fmt.Sprintf("%q key is %s, which AMT firmware does not support", name(c), keyType(c.PublicKey))}
		}
	}
	if len(warns) > 0 {
		return Result{RuleKeySize, Warn, strings.Join(warns, "; ")}
	}
	return Result{RuleKeySize, Pass, "every key is RSA 2048"}
}

func keyType(k crypto.PublicKey) string {
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

func checkSignatures(chain []*x509.Certificate, major int) Result {
	for _, c := range chain {
		switch c.SignatureAlgorithm {
		case x509.MD2WithRSA, x509.MD5WithRSA:
			return Result{RuleSignature, Fail, fmt.Sprintf("%q is signed with %s, which no firmware accepts", name(c), c.SignatureAlgorithm)}
		case x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.DSAWithSHA1:
			if judged(major) < strictFrom {
				return Result{RuleSignature, Warn, fmt.Sprintf("%q is signed with %s: AMT %d accepts it, ME 16+ firmware rejects SHA-1 anywhere in the chain", name(c), c.SignatureAlgorithm, major)}
			}
			return Result{RuleSignature, Fail, fmt.Sprintf("%q is signed with %s; ME 16+ (and ME 15 H-series) firmware rejects SHA-1 anywhere in the chain", name(c), c.SignatureAlgorithm)}
		}
	}
	return Result{RuleSignature, Pass, "no SHA-1 or MD5 signature in the chain"}
}

// CheckRootHash is the root-hash rule alone: at hello time the device's
// table is known, so the provisioner judges the site's root against it
// before it connects back.
func CheckRootHash(chain []*x509.Certificate, trusted []string) Result {
	root := chain[len(chain)-1]
	h := RootHashes(root)
	if len(trusted) > 0 {
		if slices.ContainsFunc(trusted, h.Matches) {
			return Result{RuleRootHash, Pass, fmt.Sprintf("root %q is in the device's hash table", name(root))}
		}
		return Result{RuleRootHash, Fail, fmt.Sprintf("root %q (sha256:%s) is not among the %d root hashes the device trusts; add it as a custom hash (MEBx or setup.bin) or use a certificate from one of: %s",
			name(root), h.SHA256, len(trusted), strings.Join(trusted, ", "))}
	}
	if n, ok := defaultRoots[h.SHA256]; ok {
		return Result{RuleRootHash, Pass, fmt.Sprintf("root %q is in the default AMT hash table (%s)", name(root), n)}
	}
	return Result{RuleRootHash, Warn, fmt.Sprintf("root %q is not a default AMT root: add custom hash sha256:%s to each device (MEBx or setup.bin)", name(root), h.SHA256)}
}

// checkValidity compares every certificate's dates with now. Firmware from
// AMT 6.0 has its clock set before remote configuration and checks them;
// earlier firmware set its clock only during configuration, so it cannot,
// and an out-of-date chain only warns there.
func checkValidity(chain []*x509.Certificate, now time.Time, major int) Result {
	verdict, why := Fail, ""
	if judged(major) < clockFrom {
		verdict, why = Warn, fmt.Sprintf(" (AMT %d sets its clock only during configuration and cannot check dates; AMT 6.0+ refuses it)", major)
	}
	var soon []string
	for _, c := range chain {
		if now.Before(c.NotBefore) {
			return Result{RuleValidity, verdict, fmt.Sprintf("%q is not valid before %s%s", name(c), c.NotBefore.UTC().Format(time.RFC3339), why)}
		}
		if now.After(c.NotAfter) {
			return Result{RuleValidity, verdict, fmt.Sprintf("%q expired %s%s", name(c), c.NotAfter.UTC().Format(time.RFC3339), why)}
		}
		if c.NotAfter.Sub(now) < expirySoon {
			soon = append(soon, fmt.Sprintf("%q expires %s", name(c), c.NotAfter.UTC().Format(time.RFC3339)))
		}
	}
	if len(soon) > 0 {
		return Result{RuleValidity, Warn, strings.Join(soon, "; ")}
	}
	return Result{RuleValidity, Pass, fmt.Sprintf("valid until %s", earliestExpiry(chain).UTC().Format(time.RFC3339))}
}

func earliestExpiry(chain []*x509.Certificate) time.Time {
	t := chain[0].NotAfter
	for _, c := range chain[1:] {
		if c.NotAfter.Before(t) {
			t = c.NotAfter
		}
	}
	return t
}

func checkKeyMatch(leaf *x509.Certificate, key crypto.Signer) Result {
	if key == nil {
		return Result{RuleKeyMatch, Warn, "no private key given, not checked"}
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if ok && pub.Equal(leaf.PublicKey) {
		return Result{RuleKeyMatch, Pass, "private key belongs to the leaf"}
	}
	return Result{RuleKeyMatch, Fail, fmt.Sprintf("private key does not belong to the leaf %q (is the chain reversed, root first?)", name(leaf))}
}

// Hashes are the digests of a root certificate's DER, as a device's hash
// table and hello carry them, lower-case hex.
type Hashes struct {
	SHA1, SHA256, SHA384 string
}

// RootHashes digests a certificate's DER the three ways firmware does.
func RootHashes(c *x509.Certificate) Hashes {
	s1 := sha1.Sum(c.Raw)
	s256 := sha256.Sum256(c.Raw)
	s384 := sha512.Sum384(c.Raw)
	return Hashes{hex.EncodeToString(s1[:]), hex.EncodeToString(s256[:]), hex.EncodeToString(s384[:])}
}

// Matches reports whether a hello hash "alg:hex" (or bare hex) is one of h.
func (h Hashes) Matches(helloHash string) bool {
	x := strings.ToLower(helloHash)
	if i := strings.IndexByte(x, ':'); i >= 0 {
		x = x[i+1:]
	}
	return x != "" && (x == h.SHA1 || x == h.SHA256 || x == h.SHA384)
}

func name(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	return c.Subject.String()
}
