package agentapi

import (
	"encoding/hex"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/branchbox/branchbox/cluster"
	agentwire "github.com/branchbox/branchbox/provisioner/agent"
	"github.com/branchbox/branchbox/provisioner/certrules"
	"github.com/branchbox/branchbox/provisioner/hello"
)

// Info and Hash are what the agent read from the firmware
// (`branchbox-agent info`), under the names amtsim's status uses: the
// agent's own types, so the wire contract is written once.
type (
	Info = agentwire.Info
	Hash = agentwire.Hash
)

// Provisioning states and control modes as the agent names them.
const (
	statePre  = "pre-provisioning"
	statePost = "post-provisioning"
	modeNone  = "none"
)

var (
	states = []string{statePre, "in-provisioning", statePost}
	modes  = []string{modeNone, "ccm", "acm"}
	algs   = map[string]hello.HashAlg{"SHA1": hello.SHA1, "SHA256": hello.SHA256, "SHA384": hello.SHA384}
)

// checked is an Info that passed validation, in the provisioner's terms.
type checked struct {
	Info
	uuid   string
	ip     netip.Addr   // invalid when the agent sent none
	active []hello.Hash // the active hashes
}

// validate checks every field the server relies on; prefix names where
// the object sits in the request body ("" or "info.").
func validate(in Info, prefix string) (checked, error) {
	c := checked{Info: in}
	var err error
	if c.uuid, err = hello.NormalizeUUID(in.UUID); err != nil {
		return c, fmt.Errorf("%suuid: %w", prefix, err)
	}
	if !slices.Contains(states, in.State) {
		return c, fmt.Errorf("%sstate: %q is not one of %s", prefix, in.State, strings.Join(states, ", "))
	}
	if !slices.Contains(modes, in.ControlMode) {
		return c, fmt.Errorf("%scontrol_mode: %q is not one of %s", prefix, in.ControlMode, strings.Join(modes, ", "))
	}
	if in.IP != "" {
		if c.ip, err = netip.ParseAddr(in.IP); err != nil {
			return c, fmt.Errorf("%sip: %q is not an IP address", prefix, in.IP)
		}
	}
	for i, h := range in.Hashes {
		alg, ok := algs[strings.ToUpper(h.Algorithm)]
		if !ok {
			return c, fmt.Errorf("%shashes[%d].algorithm: %q is not SHA1, SHA256 or SHA384", prefix, i, h.Algorithm)
		}
		sum, err := hex.DecodeString(h.Hash)
		if err != nil || len(sum) != alg.Size() {
			return c, fmt.Errorf("%shashes[%d].hash: not %d hex-encoded bytes of %s", prefix, i, alg.Size(), alg)
		}
		if h.Active {
			c.active = append(c.active, hello.Hash{Alg: alg, Sum: sum})
		}
	}
	return c, nil
}

// major is the firmware major version, 0 when unknown.
func (c checked) major() int {
	n, _ := strconv.Atoi(strings.SplitN(c.AMTVersion, ".", 2)[0])
	return n
}

// precheck applies, before anything is recorded, the firmware rules the
// device would refuse the site's chain for, so the agent hears the rule
// and not, later, a failed activation. The error is the answer to give.
func (s *Server) precheck(site cluster.Site, c checked, hostBased bool) (int, error) {
	if dev, ok := s.o.Store.Device(c.uuid); ok && dev.State == cluster.DeviceActivated {
		return http.StatusConflict, fmt.Errorf("device %s is already activated", c.uuid)
	}
	switch {
	case c.State == statePost:
		return http.StatusConflict, fmt.Errorf("state: device %s reports post-provisioning (control mode %s): it is already activated", c.uuid, c.ControlMode)
	case hostBased && c.State != statePre:
		return http.StatusConflict, fmt.Errorf("state: device %s is %s; host-based activation needs pre-provisioning (stop the configuration window first)", c.uuid, c.State)
	case hostBased && c.ControlMode != modeNone:
		return http.StatusConflict, fmt.Errorf("control_mode: device %s is in control mode %s; host-based activation needs none", c.uuid, c.ControlMode)
	}
	if site.CertChainPEM == "" {
		return http.StatusConflict, fmt.Errorf("site %q has no provisioning certificate", site.Name)
	}
	chain, err := certrules.ParseChain([]byte(site.CertChainPEM))
	if err != nil {
		return http.StatusConflict, fmt.Errorf("site %q provisioning certificate: %w", site.Name, err)
	}
	if len(c.active) == 0 {
		return http.StatusConflict, fmt.Errorf("%s: device %s reports no active root hash, so it trusts no provisioning certificate", certrules.RuleRootHash, c.uuid)
	}
	trusted := make([]string, len(c.active))
	for i, h := range c.active {
		trusted[i] = h.String()
	}
	if r := certrules.CheckRootHash(chain, trusted); r.Status == certrules.Fail {
		return http.StatusConflict, fmt.Errorf("%s: %s", r.Rule, r.Reason)
	}
	if c.DNSSuffix != "" {
		cn := chain[0].Subject.CommonName
		if certrules.DomainMatch(cn, c.DNSSuffix, c.major()) == certrules.NoMatch {
			return http.StatusConflict, fmt.Errorf("%s: the site's certificate %q is not within the device's DNS suffix %q (site domain %q): the device would refuse it",
				certrules.RuleDomain, cn, c.DNSSuffix, site.Domain)
		}
	}
	return 0, nil
}
