package certrules

import (
	"crypto/x509"
	"fmt"
	"strings"
)

// Match is how a leaf's CN relates to a device's DNS suffix (§4.1).
type Match int

// Match levels, weakest first.
const (
	// NoMatch: a device with this suffix refuses the certificate.
	NoMatch Match = iota
	// Registrable: only the registrable domains agree (prov.corp.example.com
	// vs branch1.example.com). AMT 2.6+ compares the last labels and
	// accepts it; tools that match exactly (RPS) do not.
	Registrable
	// Exact: the suffix is the CN, its parent domain, or a sub-domain of either.
	Exact
)

// DomainMatch compares a certificate CN with a device DNS suffix the way
// the firmware does: case-insensitively, ignoring a trailing dot and a
// leading "*." on the CN.
func DomainMatch(cn, suffix string) Match {
	cn = cleanDomain(strings.TrimPrefix(cleanDomain(cn), "*."))
	suffix = cleanDomain(suffix)
	if cn == "" || suffix == "" {
		return NoMatch
	}
	for _, d := range []string{cn, parentDomain(cn)} {
		if d != "" && (suffix == d || strings.HasSuffix(suffix, "."+d)) {
			return Exact
		}
	}
	if r := registrable(cn); r != "" && r == registrable(suffix) {
		return Registrable
	}
	return NoMatch
}

func cleanDomain(s string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
}

// parentDomain drops the host label, but never below the registrable
// domain: the parent of "example.com" is not "com".
func parentDomain(cn string) string {
	i := strings.IndexByte(cn, '.')
	if i < 0 {
		return ""
	}
	p := cn[i+1:]
	if strings.Count(p, ".")+1 < registrableLabels(cn) {
		return ""
	}
	return p
}

// Second-level labels under which country-code TLDs register names
// (example.co.uk), so the registrable domain has three labels.
var ccSecondLevel = map[string]bool{
	"co": true, "com": true, "net": true, "org": true, "gov": true, "edu": true,
	"ac": true, "or": true, "ne": true, "go": true, "gob": true, "mil": true,
}

func registrableLabels(d string) int {
	labels := strings.Split(d, ".")
	n := len(labels)
	if n >= 3 && len(labels[n-1]) == 2 && ccSecondLevel[labels[n-2]] {
		return 3
	}
	return 2
}

func registrable(d string) string {
	labels := strings.Split(d, ".")
	k := registrableLabels(d)
	if len(labels) < k {
		return ""
	}
	return strings.Join(labels[len(labels)-k:], ".")
}

func checkDomain(leaf *x509.Certificate, domain string) Result {
	cn := leaf.Subject.CommonName
	if strings.TrimSpace(domain) == "" {
		return Result{RuleDomain, Warn, fmt.Sprintf("no site domain given; leaf CN is %q", cn)}
	}
	if cn == "" {
		return Result{RuleDomain, Fail, "leaf has no CN; the firmware matches the CN's domain against its DNS suffix"}
	}
	if strings.HasPrefix(cn, "*.") {
		if DomainMatch(cn, domain) == NoMatch {
			return Result{RuleDomain, Fail, fmt.Sprintf("wildcard CN %q does not cover site domain %q", cn, domain)}
		}
		return Result{RuleDomain, Warn, fmt.Sprintf("wildcard CN %q: whether firmware accepts wildcards is unverified; a plain FQDN CN is safer", cn)}
	}
	if strings.HasSuffix(cleanDomain(domain), ".local") {
		return Result{RuleDomain, Warn, fmt.Sprintf("site domain %q ends in .local, which public CAs never certify", domain)}
	}
	switch DomainMatch(cn, domain) {
	case Exact:
		return Result{RuleDomain, Pass, fmt.Sprintf("leaf CN %q matches site domain (DHCP option 15) %q", cn, domain)}
	case Registrable:
		return Result{RuleDomain, Warn, fmt.Sprintf("leaf CN %q shares only the registrable domain %q with site domain %q: AMT 2.6+ accepts it, exact-suffix tools do not", cn, registrable(cleanDomain(cn)), domain)}
	}
	return Result{RuleDomain, Fail, fmt.Sprintf("leaf CN %q is not in site domain %q: a device whose DHCP option 15 is %q refuses it", cn, domain, domain)}
}
