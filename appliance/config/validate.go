package config

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Defaults for keys a config may leave out.
const (
	DefaultDataDir   = "/var/lib/branchbox"
	DefaultAPI       = "127.0.0.1:8443"
	DefaultDNSListen = ":53"
	DefaultHello     = ":9971"
	DefaultAgent     = ":9972"
	DefaultTTL       = 30 * time.Second
	DefaultLeaseTime = time.Hour
)

const (
	// AgentOff as provisioner.agent_listen disables the agent API.
	AgentOff = "off"
	// MinAgentToken is the shortest agent token accepted, in characters.
	MinAgentToken = 20
)

func (c *Config) applyDefaults() {
	if c.Node.ID == "" {
		if h, err := os.Hostname(); err == nil {
			c.Node.ID = h
		}
	}
	if c.Node.DataDir == "" {
		c.Node.DataDir = DefaultDataDir
	}
	c.Node.DataDir = c.Path(c.Node.DataDir)
	if c.Node.API == "" {
		c.Node.API = DefaultAPI
	}
	if c.DNS.Listen == "" {
		c.DNS.Listen = DefaultDNSListen
	}
	if c.DNS.TTL == 0 {
		c.DNS.TTL = Duration(DefaultTTL)
	}
	if c.Provisioner.Listen == "" {
		c.Provisioner.Listen = DefaultHello
	}
	if c.Provisioner.AgentListen == "" {
		c.Provisioner.AgentListen = DefaultAgent
	}
	if c.Node.Cluster != nil && c.Node.Cluster.Role == "" {
		c.Node.Cluster.Role = "voter"
	}
	for i := range c.Sites {
		if c.Sites[i].LeaseTime == 0 {
			c.Sites[i].LeaseTime = Duration(DefaultLeaseTime)
		}
	}
}

// Path resolves a path from the config against the config's directory.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) || c.Dir == "" {
		return p
	}
	return filepath.Join(c.Dir, p)
}

var (
	nodeIDRe   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	siteNameRe = nodeIDRe
	labelRe    = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// validate checks the decoded config as a whole.
func (c *Config) validate() Errors {
	var errs Errors
	add := func(path, format string, a ...any) {
		errs = append(errs, FieldError{path, fmt.Sprintf(format, a...)})
	}

	if !nodeIDRe.MatchString(c.Node.ID) {
		add("node.id", "%q is not a valid id (letters, digits, '.', '_', '-')", c.Node.ID)
	}
	checkHostPort(add, "node.api", c.Node.API)
	if cl := c.Node.Cluster; cl != nil {
		checkHostPort(add, "node.cluster.raft", cl.Raft)
		for i, j := range cl.Join {
			checkHostPort(add, fmt.Sprintf("node.cluster.join[%d]", i), j)
		}
		if host, _, err := net.SplitHostPort(cl.Raft); err == nil {
			if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
				add("node.cluster.raft", "%q: give the address other members reach this one at, not a wildcard", cl.Raft)
			}
		}
		if len(cl.Join) > 0 && cl.JoinToken == "" && cl.JoinTokenFile == "" {
			add("node.cluster.join_token", "joining needs the join token (run `ctl cluster token` on a member); set join_token or join_token_file")
		}
		if hb := cl.Heartbeat.Std(); hb != 0 && (hb < 100*time.Millisecond || hb > 10*time.Second) {
			add("node.cluster.heartbeat", "%s is outside 100ms–10s", hb)
		}
		if cl.JoinToken != "" && cl.JoinTokenFile != "" {
			add("node.cluster.join_token", "set join_token or join_token_file, not both")
		}
		switch cl.Role {
		case "voter":
		case "witness":
			if len(c.Sites) > 0 {
				add("sites", "a witness serves no sites (no DHCP, DNS or provisioner): remove them, or make this member a voter")
			}
		default:
			add("node.cluster.role", "%q is not voter or witness", cl.Role)
		}
	}
	switch c.Node.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		add("node.log_level", "%q is not debug, info, warn or error", c.Node.LogLevel)
	}

	if !c.DNS.Disabled {
		checkHostPort(add, "dns.listen", c.DNS.Listen)
	}
	for i, f := range c.DNS.Forward {
		if _, err := netip.ParseAddr(f); err != nil {
			if _, err := netip.ParseAddrPort(f); err != nil {
				add(fmt.Sprintf("dns.forward[%d]", i), "%q is not an IP address or IP:port", f)
			}
		}
	}
	if c.DNS.TTL.Std() < time.Second || c.DNS.TTL.Std() > 24*time.Hour {
		add("dns.ttl", "%s is outside 1s..24h", c.DNS.TTL.Std())
	}
	if c.DHCP.RelayListen != "" {
		checkHostPort(add, "dhcp.relay_listen", c.DHCP.RelayListen)
	}
	checkHostPort(add, "provisioner.listen", c.Provisioner.Listen)
	if c.Provisioner.AgentListen != AgentOff {
		checkHostPort(add, "provisioner.agent_listen", c.Provisioner.AgentListen)
	}
	for i, a := range c.Provisioner.Advertise {
		if _, err := netip.ParseAddr(a); err != nil {
			add(fmt.Sprintf("provisioner.advertise[%d]", i), "%q is not an IP address", a)
		}
	}

	profiles := map[string]bool{}
	for i, p := range c.Profiles {
		path := fmt.Sprintf("profiles[%d]", i)
		switch {
		case p.Name == "":
			add(path+".name", "is required")
		case profiles[p.Name]:
			add(path+".name", "%q is used by another profile", p.Name)
		}
		profiles[p.Name] = true
		if p.AdminPasswordFile == "" {
			add(path+".admin_password_file", "is required")
		} else {
			c.checkPassword(add, path+".admin_password_file", p.AdminPasswordFile)
		}
		if p.MEBxPasswordFile != "" {
			c.checkPassword(add, path+".mebx_password_file", p.MEBxPasswordFile)
		}
		switch p.UserConsent {
		case "", "none", "kvm", "all":
		default:
			add(path+".user_consent", "%q is not none, kvm or all", p.UserConsent)
		}
	}

	names, domains := map[string]int{}, map[string]int{}
	var subnets []struct {
		p   netip.Prefix
		idx int
	}
	relays := 0
	for i, s := range c.Sites {
		path := fmt.Sprintf("sites[%d]", i)
		switch {
		case !siteNameRe.MatchString(s.Name):
			add(path+".name", "%q is not a valid site name", s.Name)
		default:
			if j, dup := names[s.Name]; dup {
				add(path+".name", "%q is already used by sites[%d]", s.Name, j)
			}
			names[s.Name] = i
		}
		dom := strings.TrimSuffix(strings.ToLower(s.Domain), ".")
		if err := checkDomain(dom); err != nil {
			add(path+".domain", "%q %v", s.Domain, err)
		} else {
			if j, dup := domains[dom]; dup {
				add(path+".domain", "%q is already used by sites[%d]", s.Domain, j)
			}
			domains[dom] = i
		}
		switch {
		case s.Interface != "" && s.Relay:
			add(path+".relay", "a site is served on an interface or through a relay, not both")
		case s.Interface == "" && !s.Relay:
			add(path+".interface", "is required (or set relay: true for a relayed subnet)")
		}
		if s.Relay {
			relays++
		}
		prefix, err := netip.ParsePrefix(s.Subnet)
		if err != nil || !prefix.Addr().Is4() {
			add(path+".subnet", "%q is not an IPv4 CIDR like 10.1.0.0/24", s.Subnet)
			continue
		}
		if prefix != prefix.Masked() {
			add(path+".subnet", "%s has host bits set (did you mean %s?)", s.Subnet, prefix.Masked())
			prefix = prefix.Masked()
		}
		for _, o := range subnets {
			if o.p.Overlaps(prefix) {
				add(path+".subnet", "%s overlaps sites[%d].subnet %s", prefix, o.idx, o.p)
			}
		}
		subnets = append(subnets, struct {
			p   netip.Prefix
			idx int
		}{prefix, i})

		var router netip.Addr
		if s.Router != "" {
			router = checkAddrIn(add, path+".router", s.Router, prefix)
		}
		if len(s.Range) != 2 {
			add(path+".range", "want [first, last], have %d values", len(s.Range))
		} else {
			lo := checkAddrIn(add, path+".range", s.Range[0], prefix)
			hi := checkAddrIn(add, path+".range", s.Range[1], prefix)
			if lo.IsValid() && hi.IsValid() {
				switch {
				case hi.Less(lo):
					add(path+".range", "%s comes after %s", lo, hi)
				case router.IsValid() && !router.Less(lo) && !hi.Less(router):
					add(path+".range", "%s-%s contains the router %s", lo, hi, router)
				case lo == prefix.Addr() || hi == lastAddr(prefix):
					add(path+".range", "%s-%s contains the network or broadcast address", lo, hi)
				}
			}
		}
		if s.LeaseTime.Std() < time.Minute {
			add(path+".lease_time", "%s is shorter than 1m", s.LeaseTime.Std())
		}
		for j, d := range s.DNSServers {
			if _, err := netip.ParseAddr(d); err != nil {
				add(fmt.Sprintf("%s.dns_servers[%d]", path, j), "%q is not an IP address", d)
			}
		}
		if s.NextServer != "" {
			if _, err := netip.ParseAddr(s.NextServer); err != nil {
				add(path+".next_server", "%q is not an IP address", s.NextServer)
			}
		}
		resIPs := map[string]int{}
		for j, r := range s.Reservations {
			rp := fmt.Sprintf("%s.reservations[%d]", path, j)
			if r.MAC == "" && r.ClientID == "" {
				add(rp, "needs mac or client_id")
			}
			if r.MAC != "" {
				if _, err := net.ParseMAC(r.MAC); err != nil {
					add(rp+".mac", "%q is not a MAC address", r.MAC)
				}
			}
			if r.ClientID != "" && !isHex(r.ClientID) {
				add(rp+".client_id", "%q is not hex (option 61 bytes, e.g. 01aabbccddeeff)", r.ClientID)
			}
			ip := checkAddrIn(add, rp+".ip", r.IP, prefix)
			if ip.IsValid() {
				if k, dup := resIPs[ip.String()]; dup {
					add(rp+".ip", "%s is already reserved by reservations[%d]", ip, k)
				}
				resIPs[ip.String()] = j
			}
		}
		if s.Profile != "" && !profiles[s.Profile] {
			add(path+".profile", "%q is not a profile defined under profiles", s.Profile)
		}
		if pc := s.ProvisioningCert; pc != nil {
			c.checkCertFiles(add, path+".provisioning_cert", pc)
		}
		if s.AgentTokenFile != "" {
			c.checkAgentToken(add, path+".agent_token_file", s.AgentTokenFile)
		}
		if s.NamingTemplate != "" && !strings.Contains(s.NamingTemplate, "{uuid") {
			add(path+".naming_template", "%q must contain {uuid} or {uuid8} so names are unique", s.NamingTemplate)
		}
	}
	if relays > 0 && c.DHCP.RelayListen == "" {
		add("dhcp.relay_listen", "is required when a site has relay: true")
	}
	return errs
}

func checkHostPort(add func(string, string, ...any), path, v string) {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		add(path, "%q is not host:port", v)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		add(path, "port %q is not 0-65535", port)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil && host != "localhost" {
			add(path, "host %q is not an IP address", host)
		}
	}
}

func checkAddrIn(add func(string, string, ...any), path, v string, p netip.Prefix) netip.Addr {
	a, err := netip.ParseAddr(v)
	if err != nil {
		add(path, "%q is not an IP address", v)
		return netip.Addr{}
	}
	if !p.Contains(a) {
		add(path, "%s is outside subnet %s", a, p)
		return netip.Addr{}
	}
	return a
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func checkDomain(d string) error {
	if d == "" {
		return fmt.Errorf("is required")
	}
	if len(d) > 253 {
		return fmt.Errorf("is longer than 253 characters")
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return fmt.Errorf("needs at least two labels (AMT matches the certificate on them)")
	}
	for _, l := range labels {
		if !labelRe.MatchString(l) {
			return fmt.Errorf("has an invalid label %q", l)
		}
	}
	return nil
}

func isHex(s string) bool {
	s = strings.ReplaceAll(s, ":", "")
	if len(s) == 0 || len(s)%2 != 0 {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	return true
}

func (c *Config) checkPassword(add func(string, string, ...any), path, file string) {
	b, err := os.ReadFile(c.Path(file))
	if err != nil {
		add(path, "cannot read %s: %v", file, unwrapPathErr(err))
		return
	}
	pw := strings.TrimRight(string(b), "\r\n")
	// AMT's admin password rule: 8-32 characters with upper, lower, digit
	// and a non-alphanumeric character. The value itself is never echoed.
	if !StrongAMTPassword(pw) {
		add(path, "password in %s does not meet AMT's rule (8-32 chars, upper, lower, digit, symbol)", file)
	}
}

// checkAgentToken wants a token long enough not to be guessed; its value
// is never echoed.
func (c *Config) checkAgentToken(add func(string, string, ...any), path, file string) {
	tok, err := ReadAgentToken(c.Path(file))
	if err != nil {
		add(path, "cannot read %s: %v", file, unwrapPathErr(err))
		return
	}
	if n := len([]rune(tok)); n < MinAgentToken {
		add(path, "the token in %s has %d characters; want at least %d (e.g. `openssl rand -hex 32 > %s`)", file, n, MinAgentToken, file)
	}
}

// ReadAgentToken reads an agent token file; surrounding white space is
// not part of the token.
func ReadAgentToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// StrongAMTPassword reports whether pw meets AMT's admin password rule.
func StrongAMTPassword(pw string) bool {
	if len(pw) < 8 || len(pw) > 32 {
		return false
	}
	var up, lo, dig, sym bool
	for _, r := range pw {
		switch {
		case r >= 'A' && r <= 'Z':
			up = true
		case r >= 'a' && r <= 'z':
			lo = true
		case r >= '0' && r <= '9':
			dig = true
		case r == '"' || r == ',' || r == ':' || r < 0x20 || r > 0x7e:
			return false
		default:
			sym = true
		}
	}
	return up && lo && dig && sym
}

func (c *Config) checkCertFiles(add func(string, string, ...any), path string, pc *CertFiles) {
	if pc.Chain == "" {
		add(path+".chain", "is required")
	} else if b, err := os.ReadFile(c.Path(pc.Chain)); err != nil {
		add(path+".chain", "cannot read %s: %v", pc.Chain, unwrapPathErr(err))
	} else if n := countCerts(b); n == 0 {
		add(path+".chain", "%s holds no PEM certificate", pc.Chain)
	}
	if pc.Key == "" {
		add(path+".key", "is required")
	} else if b, err := os.ReadFile(c.Path(pc.Key)); err != nil {
		add(path+".key", "cannot read %s: %v", pc.Key, unwrapPathErr(err))
	} else if blk, _ := pem.Decode(b); blk == nil || !strings.Contains(blk.Type, "PRIVATE KEY") {
		add(path+".key", "%s holds no PEM private key", pc.Key)
	}
}

func countCerts(b []byte) int {
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return n
		}
		if blk.Type == "CERTIFICATE" {
			if _, err := x509.ParseCertificate(blk.Bytes); err == nil {
				n++
			}
		}
	}
}

func unwrapPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
