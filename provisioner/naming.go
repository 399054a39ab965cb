package provisioner

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/branchbox/branchbox/cluster"
)

// DefaultNamingTemplate names a device nobody told us about.
const DefaultNamingTemplate = "amt-{uuid8}"

var hostLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// deviceFQDN picks the device's name (issue 6): the inventory entry, else
// the DHCP hostname of the lease at the hello's source address, else the
// site's naming template when the site allows it.
func deviceFQDN(st Store, site cluster.Site, dev cluster.Device, haveDev bool, ip string) (fqdn, source string, err error) {
	if haveDev && dev.Hostname != "" {
		return qualify(dev.Hostname, site.Domain), "inventory", nil
	}
	if l, ok := st.Lease(ip); ok && l.State == cluster.LeaseBound && l.Hostname != "" {
		if h := sanitizeLabel(l.Hostname); h != "" {
			return qualify(h, site.Domain), "dhcp hostname", nil
		}
	}
	if !site.AllowTemplate {
		return "", "", fmt.Errorf("no inventory entry and no DHCP hostname for %s, and site %q does not allow its naming template", ip, site.Name)
	}
	tmpl := site.NamingTemplate
	if tmpl == "" {
		tmpl = DefaultNamingTemplate
	}
	return qualify(ExpandTemplate(tmpl, dev.UUID), site.Domain), "site template", nil
}

// ExpandTemplate fills {uuid} and {uuid8} (the first 8 hex digits).
func ExpandTemplate(tmpl, uuid string) string {
	u := strings.ToLower(uuid)
	u8 := strings.ReplaceAll(u, "-", "")
	if len(u8) > 8 {
		u8 = u8[:8]
	}
	return strings.NewReplacer("{uuid}", u, "{uuid8}", u8).Replace(tmpl)
}

// qualify appends the site domain to a bare host name.
func qualify(host, domain string) string {
	host = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(host)), ".")
	if strings.Contains(host, ".") || domain == "" {
		return host
	}
	return host + "." + strings.TrimSuffix(strings.ToLower(domain), ".")
}

// sanitizeLabel keeps the first label of a client-supplied name if it is
// a valid DNS label; DHCP option 12 is whatever the client sent.
func sanitizeLabel(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	if i := strings.IndexByte(h, '.'); i >= 0 {
		h = h[:i]
	}
	if !hostLabel.MatchString(h) {
		return ""
	}
	return h
}
