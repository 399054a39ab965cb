// Package firmware holds what differs between Intel AMT firmware generations:
// the version profiles, the root-certificate hash table and the rules a device
// applies to a provisioning certificate chain (amt-protocol.md §4).
package firmware

import (
	"crypto/tls"
	"fmt"
	"strconv"
	"strings"

	"github.com/branchbox/branchbox/tests/amtsim/hello"
)

// Profile is one firmware generation's behaviour.
type Profile struct {
	Name    string // "16.x"
	Version string // full version as reported by CIM_SoftwareIdentity and the Server header
	Build   string
	SKU     string

	// Hash table.
	HashSet        string          // default set in default-hashes.txt
	HashAlgs       []hello.HashAlg // algorithms the table may hold
	HashCapacity   int             // total entries, default + custom
	CustomCapacity int             // custom entries

	// Certificate rules.
	MaxChainLength      int
	AllowSHA1Signatures bool
	MinRSABits          int
	MaxRSABits          int  // every certificate in the chain
	ChecksValidity      bool // certificate dates against the device clock (rules.go, checkValidity)
	TwoLabelTLDs        []string
	ThreeLabelTLDs      []string

	// Flows.
	PSKHello                 bool // may send a v2 (PID) hello
	HostBasedSetup           bool // IPS_HostBasedSetupService exists
	KeepsSuffixOnUnprovision bool

	// TLS on 16993 while in setup mode.
	TLSMinVersion uint16
	TLSMaxVersion uint16
	CipherSuites  []uint16
}

// RSA key exchange + AES-CBC: what old firmware offers (amt-protocol.md §1,
// MeshCentral's RSA+AES cipher string).
var rsaKexAES = []uint16{
	tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	tls.TLS_RSA_WITH_AES_256_CBC_SHA,
}

var modernSuites = []uint16{
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	tls.TLS_RSA_WITH_AES_256_CBC_SHA,
}

// Top-level domains for which AMT reduces the certificate CN to its last two
// (or three) labels before comparing with the device suffix (§4.1).
var (
	comNet        = []string{"com", "net"}
	extendedTwo   = []string{"com", "net", "org", "gov", "edu", "de", "ch", "dk", "cz", "ua", "cl", "io", "info", "biz", "us"}
	extendedThree = []string{"uk", "fr", "ca", "nl", "br", "au", "jp", "nz", "za", "in", "il", "kr", "mx", "ar", "tr", "pl", "it", "es", "be", "at", "se", "no", "fi", "ie", "pt", "ru", "cn", "tw", "hk", "sg"}
)

func legacy(name, version string) Profile {
	return Profile{
		Name: name, Version: version, Build: "1000", SKU: "8",
		HashSet: "legacy", HashAlgs: []hello.HashAlg{hello.SHA1},
		HashCapacity: 23, CustomCapacity: 3,
		MaxChainLength: 4, AllowSHA1Signatures: true, MinRSABits: 1024, MaxRSABits: 2048,
		TwoLabelTLDs:  comNet,
		PSKHello:      true,
		TLSMinVersion: tls.VersionTLS10, TLSMaxVersion: tls.VersionTLS10, CipherSuites: rsaKexAES,
	}
}

// Profiles are the supported firmware generations, keyed by major version.
var Profiles = map[int]Profile{
	2: legacy("2.6", "2.6.3"),
	3: legacy("3.0", "3.0.2"),
	11: {
		Name: "11.x", Version: "11.8.55", Build: "3510", SKU: "16392",
		HashSet: "modern", HashAlgs: []hello.HashAlg{hello.SHA1, hello.SHA256, hello.SHA384},
		HashCapacity: 33, CustomCapacity: 3,
		MaxChainLength: 4, AllowSHA1Signatures: true, MinRSABits: 1024, MaxRSABits: 2048, ChecksValidity: true,
		TwoLabelTLDs: extendedTwo, ThreeLabelTLDs: extendedThree,
		HostBasedSetup: true,
		TLSMinVersion:  tls.VersionTLS10, TLSMaxVersion: tls.VersionTLS12, CipherSuites: modernSuites,
		KeepsSuffixOnUnprovision: false,
	},
	16: {
		Name: "16.x", Version: "16.1.27", Build: "2176", SKU: "16392",
		HashSet: "modern", HashAlgs: []hello.HashAlg{hello.SHA256, hello.SHA384},
		HashCapacity: 33, CustomCapacity: 3,
		MaxChainLength: 4, AllowSHA1Signatures: false, MinRSABits: 2048, MaxRSABits: 2048, ChecksValidity: true,
		TwoLabelTLDs: extendedTwo, ThreeLabelTLDs: extendedThree,
		HostBasedSetup: true,
		TLSMinVersion:  tls.VersionTLS12, TLSMaxVersion: tls.VersionTLS12, CipherSuites: modernSuites,
		KeepsSuffixOnUnprovision: true,
	},
}

// DefaultVersion is used when none is asked for.
const DefaultVersion = "16.1"

// Lookup finds the profile for a version such as "16", "16.1", "11.8" or "2.6".
func Lookup(version string) (Profile, error) {
	major, _, _ := strings.Cut(strings.TrimSpace(version), ".")
	n, err := strconv.Atoi(major)
	if err != nil {
		return Profile{}, fmt.Errorf("amt version %q: not X.Y", version)
	}
	p, ok := Profiles[n]
	if !ok {
		return Profile{}, fmt.Errorf("amt version %q: supported majors are 2 (2.6), 3 (3.0), 11 (11.x), 16 (16.x)", version)
	}
	return p, nil
}

// ServerHeader is the HTTP Server header AMT sends.
func (p Profile) ServerHeader() string {
	return "Intel(R) Active Management Technology " + p.Version + "." + p.Build
}

func (p Profile) allowsAlg(a hello.HashAlg) bool {
	for _, x := range p.HashAlgs {
		if x == a {
			return true
		}
	}
	return false
}

// CodeVersion is one entry of the firmware's version table.
type CodeVersion struct {
	Name, Value string
}

// CodeVersions is the version table AMT reports both as CIM_SoftwareIdentity
// instances and in MEI CFG_GetCodeVersions, with the entry names of real
// devices (RPS's CIM_SoftwareIdentity test fixtures; fwupd and rpc-go look up
// "AMT", "Build Number", "Sku" and "Recovery Version" by these names).
func (p Profile) CodeVersions() []CodeVersion {
	return []CodeVersion{
		{"Flash", p.Version}, {"Netstack", p.Version}, {"AMTApps", p.Version}, {"AMT", p.Version},
		{"Sku", p.SKU}, {"VendorID", "8086"}, {"Build Number", p.Build}, {"Recovery Version", p.Version},
		{"Recovery Build Num", p.Build}, {"Legacy Mode", "False"},
	}
}
