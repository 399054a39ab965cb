package certrules

import (
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
)

// Match is how a leaf's CN relates to a device's DNS suffix (§4.1).
type Match int

// Match levels, weakest first.
const (
	// NoMatch: a device with this suffix refuses the certificate.
	NoMatch Match = iota
	// Registrable: the CN is outside the suffix, but the suffix lies within
	// the CN reduced to its registrable domain (last two labels, three for
	// co.uk-style TLDs). AMT accepts it; tools that match exactly (RPS)
	// do not.
	Registrable
	// Exact: the CN is the suffix or a name within it.
	Exact
)

// Top-level domains under which the firmware reduces a CN to its last two
// (or three) labels before comparing (§4.1: AMT 2.6 for .com/.net, AMT
// 4.1/5.1 for more and for third-level registrations; the lists follow
// MeshCentral's emulation, MC-CERTOPS).
var (
	legacyTwoLabel = []string{"com", "net"}
	twoLabel       = []string{"com", "net", "org", "gov", "edu", "de", "ch", "dk", "cz", "ua", "cl", "io", "info", "biz", "us"}
	threeLabel     = []string{"uk", "fr", "ca", "nl", "br", "au", "jp", "nz", "za", "in", "il", "kr", "mx", "ar", "tr", "pl", "it", "es", "be", "at", "se", "no", "fi", "ie", "pt", "ru", "cn", "tw", "hk", "sg"}
)

// DomainMatch compares a certificate CN with a device DNS suffix the way
// firmware of the given major (0: current firmware) does: case-insensitively,
// ignoring a trailing dot.
func DomainMatch(cn, suffix string, major int) Match {
	cn, suffix = cleanDomain(cn), cleanDomain(suffix)
	if cn == "" || suffix == "" {
		return NoMatch
	}
	if cn == suffix || strings.HasSuffix(cn, "."+suffix) {
		return Exact
	}
	if r := registrable(cn, major); r != "" && (suffix == r || strings.HasSuffix(suffix, "."+r)) {
		return Registrable
	}
	return NoMatch
}

func cleanDomain(s string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
}

// registrable reduces d to the labels the firmware compares, "" when its
// TLD is not one the firmware reduces.
func registrable(d string, major int) string {
	labels := strings.Split(d, ".")
	tld := labels[len(labels)-1]
	keep := 0
	switch {
	case judged(major) < extendedTLDsFrom:
		if slices.Contains(legacyTwoLabel, tld) {
			keep = 2
		}
	case slices.Contains(twoLabel, tld):
		keep = 2
	case slices.Contains(threeLabel, tld):
		keep = 3
	}
	if keep == 0 || len(labels) < keep {
		return ""
	}
	return strings.Join(labels[len(labels)-keep:], ".")
}

func checkDomain(leaf *x509.Certificate, domain string, major int) Result {
	cn := leaf.Subject.CommonName
	if strings.TrimSpace(domain) == "" {
		return Result{RuleDomain, Warn, fmt.Sprintf("no site domain given; leaf CN is %q", cn)}
	}
	if cn == "" {
		return Result{RuleDomain, Fail, "leaf has no CN; the firmware matches the CN's domain against its DNS suffix"}
	}
	// Whether firmware accepts a wildcard CN is unknown [U] (§4.1); Intel's
	// answers favour a plain FQDN, and amtsim refuses it, so the check does.
	if strings.HasPrefix(cn, "*.") {
		return Result{RuleDomain, Fail, fmt.Sprintf("leaf CN %q is a wildcard; provisioning certificates need a plain FQDN CN within %q", cn, domain)}
	}
	m := DomainMatch(cn, domain, major)
	if m != NoMatch && strings.HasSuffix(cleanDomain(domain), ".local") {
		return Result{RuleDomain, Warn, fmt.Sprintf("site domain %q ends in .local, which public CAs never certify", domain)}
	}
	switch m {
	case Exact:
		return Result{RuleDomain, Pass, fmt.Sprintf("leaf CN %q matches site domain (DHCP option 15) %q", cn, domain)}
	case Registrable:
		return Result{RuleDomain, Warn, fmt.Sprintf("leaf CN %q is outside site domain %q but shares its registrable domain %q: AMT accepts it, exact-suffix tools do not", cn, domain, registrable(cleanDomain(cn), major))}
	}
	return Result{RuleDomain, Fail, fmt.Sprintf("leaf CN %q is not in site domain %q: a device whose DHCP option 15 is %q refuses it", cn, domain, domain)}
}
