package appliance

import (
	"fmt"
	"os"
	"strings"

	"github.com/branchbox/branchbox/appliance/config"
	dnsserver "github.com/branchbox/branchbox/plugins/dns/server"
	"github.com/branchbox/branchbox/provisioner/certrules"
)

// LoadConfig parses and validates a config file, including the firmware
// rules every site's provisioning certificate must pass, so a bad
// certificate is reported before any device can fail on it.
func LoadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	errs, _ := err.(config.Errors)
	if err != nil && errs == nil {
		return nil, err
	}
	errs = append(errs, checkCertificates(cfg)...)
	// The Corefile snippet is only checkable by CoreDNS itself; do it when
	// the rest of the dns section is sound, so one mistake is one line.
	if !cfg.DNS.Disabled && !hasErrorUnder(errs, "dns.") {
		if err := dnsserver.Validate(dnsConfig(cfg.DNS)); err != nil {
			errs = append(errs, config.FieldError{Path: "dns.corefile", Msg: err.Error()})
		}
	}
	if len(errs) > 0 {
		return cfg, errs
	}
	return cfg, nil
}

func checkCertificates(cfg *config.Config) config.Errors {
	var errs config.Errors
	for i, s := range cfg.Sites {
		pc := s.ProvisioningCert
		if pc == nil || !readable(cfg.Path(pc.Chain)) || !readable(cfg.Path(pc.Key)) {
			continue // the config's own check already named the file
		}
		for _, r := range certrules.Failures(certrules.CheckFiles(s.Domain, cfg.Path(pc.Chain), cfg.Path(pc.Key))) {
			errs = append(errs, config.FieldError{
				Path: fmt.Sprintf("sites[%d].provisioning_cert", i),
				Msg:  fmt.Sprintf("rule %s: %s", r.Rule, r.Reason),
			})
		}
	}
	return errs
}

func hasErrorUnder(errs config.Errors, prefix string) bool {
	for _, e := range errs {
		if strings.HasPrefix(e.Path, prefix) {
			return true
		}
	}
	return false
}

func readable(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	f.Close()
	return true
}
