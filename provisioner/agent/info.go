// Package agent is branchbox-agent's logic on the managed PC: read the
// device's identity from the Management Engine (mei), register it with
// branchbox and hand its one-time password to the firmware, open or close
// the remote-configuration window, and relay host-based ACM activation
// between branchbox and the local WS-Man endpoint (LMS).
package agent

import (
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/branchbox/branchbox/provisioner/agent/mei"
)

// Info is what `info` prints and `register`/`activate` send: the same
// names and values as amtsim's status JSON (agent-design.md §3).
type Info struct {
	UUID        string `json:"uuid"`
	AMTVersion  string `json:"amt_version"`
	Build       string `json:"build"`
	SKU         string `json:"sku"`
	State       string `json:"state"`
	ControlMode string `json:"control_mode"`
	DNSSuffix   string `json:"dns_suffix"`
	Hashes      []Hash `json:"hashes"`
	MAC         string `json:"mac"`
	IP          string `json:"ip"`
}

// Hash is one entry of the firmware's root-certificate hash table.
type Hash struct {
	Name      string `json:"name"`
	Algorithm string `json:"algorithm"` // SHA1, SHA256, SHA384
	Hash      string `json:"hash"`      // lower-case hex
	Active    bool   `json:"active"`
	Default   bool   `json:"default"`
}

// Code-version entry names, as rpc-go amtinfo reads them.
const (
	versionAMT   = "AMT"
	versionBuild = "Build Number"
	versionSKU   = "Sku"
)

// ReadInfo asks the firmware for everything in Info.
func ReadInfo(c *mei.Client) (Info, error) {
	uuid, err := c.GetUUID()
	if err != nil {
		return Info{}, err
	}
	vers, err := c.GetCodeVersions()
	if err != nil {
		return Info{}, err
	}
	amt, ok := vers.Lookup(versionAMT)
	if !ok {
		return Info{}, fmt.Errorf("pthi %s: no %q entry in %d versions", mei.CmdGetCodeVersions, versionAMT, len(vers.Versions))
	}
	build, _ := vers.Lookup(versionBuild)
	sku, _ := vers.Lookup(versionSKU)
	state, err := c.GetProvisioningState()
	if err != nil {
		return Info{}, err
	}
	mode, err := c.GetControlMode()
	if err != nil {
		return Info{}, err
	}
	suffix, err := c.GetPkiFqdnSuffix()
	if err != nil {
		return Info{}, err
	}
	entries, err := c.CertificateHashes()
	if err != nil {
		return Info{}, err
	}
	lan, err := c.GetLANInterfaceSettings(mei.GetLANInterfaceSettingsRequest{Index: 0})
	if err != nil {
		return Info{}, err
	}
	info := Info{
		UUID: uuid.String(), AMTVersion: amt, Build: build, SKU: sku,
		State: state.String(), ControlMode: mode.String(), DNSSuffix: suffix,
		Hashes: make([]Hash, 0, len(entries)),
		MAC:    lan.MAC.String(),
	}
	// 0.0.0.0 is the firmware's "no address"; amtsim leaves ip empty then.
	if !lan.IPv4.IsUnspecified() {
		info.IP = lan.IPv4.String()
	}
	for _, e := range entries {
		info.Hashes = append(info.Hashes, Hash{
			Name: e.Name, Algorithm: strings.ToUpper(e.Algorithm.String()), Hash: hex.EncodeToString(e.Hash),
			Active: e.Active, Default: e.Default,
		})
	}
	return info, nil
}
