// Package certcheck is `branchbox cert check`: it runs every firmware rule
// on a provisioning chain and prints one line per rule.
package certcheck

import (
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/branchbox/branchbox/provisioner/certrules"
)

// RunCertCheck parses `--domain D --chain CHAIN.pem [--key KEY.pem]`,
// prints "STATUS rule reason" per rule and returns 0 only when no rule
// fails (1 when one does, 2 on bad usage).
func RunCertCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cert check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	domain := fs.String("domain", "", "the site's domain: DHCP option 15, the devices' DNS suffix")
	chain := fs.String("chain", "", "PEM provisioning chain, leaf first, root last")
	key := fs.String("key", "", "PEM private key of the leaf (optional)")
	version := fs.String("amt-version", "", "judge for devices of this AMT version, e.g. 11.8 (default: any device, current firmware's rules)")
	var trusted hashList
	fs.Var(&trusted, "trusted-hash", "a root hash the devices trust, sha256:HEX (repeatable; from a hello or `rpc amtinfo`); default: judge the root against the default AMT table")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: branchbox cert check --domain D --chain CHAIN.pem [--key KEY.pem] [--amt-version X.Y] [--trusted-hash ALG:HEX]...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *domain == "" || *chain == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	major := 0
	if *version != "" {
		m, _, _ := strings.Cut(*version, ".")
		n, err := strconv.Atoi(m)
		if err != nil || n < 1 {
			fmt.Fprintf(stderr, "cert check: --amt-version %q is not X.Y\n", *version)
			return 2
		}
		major = n
	}
	results := certrules.CheckFilesFor(certrules.Device{AMTMajor: major, Trusted: trusted}, *domain, *chain, *key)
	for _, r := range results {
		fmt.Fprintln(stdout, r.String())
	}
	if certrules.Failed(results) {
		fmt.Fprintf(stderr, "cert check: %d rule(s) failed\n", len(certrules.Failures(results)))
		return 1
	}
	return 0
}

// hashList collects --trusted-hash values, checked as ALG:HEX or bare hex.
type hashList []string

func (l *hashList) String() string { return strings.Join(*l, ",") }

func (l *hashList) Set(v string) error {
	alg, sum, found := strings.Cut(strings.ToLower(strings.TrimSpace(v)), ":")
	if !found {
		alg, sum = "", alg
	}
	want := map[string]int{"": 0, "sha1": 40, "sha256": 64, "sha384": 96}
	n, ok := want[alg]
	if _, err := hex.DecodeString(sum); !ok || err != nil || (n != 0 && len(sum) != n) || (n == 0 && len(sum) != 40 && len(sum) != 64 && len(sum) != 96) {
		return fmt.Errorf("%q is not sha1:HEX, sha256:HEX or sha384:HEX", v)
	}
	*l = append(*l, v)
	return nil
}
