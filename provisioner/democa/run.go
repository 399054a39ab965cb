package democa

import (
	"flag"
	"fmt"
	"io"
)

// Run implements `democa --domain D --out DIR [--cn NAME]`: it writes a
// fresh demo chain and prints the root hash devices need. Exit 0 on
// success, 2 on bad usage, 1 on failure.
func Run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo-ca", flag.ContinueOnError)
	fs.SetOutput(stderr)
	domain := fs.String("domain", "", "site domain (DHCP option 15) the leaf is issued for")
	out := fs.String("out", "", "directory to write chain.pem, key.pem, root.pem, root.sha256")
	cn := fs.String("cn", "", "leaf common name (default setup.<domain>)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *domain == "" || *out == "" {
		fmt.Fprintln(stderr, "demo-ca: --domain and --out are required")
		return 2
	}
	c, err := Generate(Options{Domain: *domain, CommonName: *cn})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	files, err := c.WriteFiles(*out)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "chain %s\nkey %s\nroot-sha256 %s\n", files.Chain, files.Key, c.RootSHA256())
	return 0
}
