// Package option15 is the option15 plugin: the site's DNS domain as option
// 15 and as the option 119 search list. AMT compares option 15 with the
// domain of its provisioning certificate, so this is what makes zero-touch
// activation work per site.
package option15

import (
	"fmt"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/rfc1035label"

	"github.com/branchbox/branchbox/plugins/dhcp/chain"
)

// Plugin registers as "option15".
var Plugin = chain.Plugin{Name: "option15", Setup: setup}

func setup(env chain.Env) (chain.Handler, error) {
	domain := strings.TrimSuffix(env.Site.Domain, ".")
	if domain == "" {
		return nil, nil
	}
	if err := validDomain(domain); err != nil {
		return nil, fmt.Errorf("site %q: domain %q: %w", env.Site.Name, env.Site.Domain, err)
	}
	opts := chain.NewPreset(dhcpv4.OptDomainName(domain),
		dhcpv4.OptDomainSearch(&rfc1035label.Labels{Labels: []string{domain}}))
	return func(req, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool) {
		opts.Set(resp)
		return resp, false
	}, nil
}

func validDomain(d string) error {
	if len(d) > 253 {
		return fmt.Errorf("longer than 253 characters")
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("label %q: must be 1 to 63 characters", label)
		}
		for _, r := range label {
			if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return fmt.Errorf("label %q: character %q not allowed", label, r)
			}
		}
	}
	return nil
}
