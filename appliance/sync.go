package appliance

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/branchbox/branchbox/appliance/config"
	"github.com/branchbox/branchbox/cluster"
)

// sourceConfig marks records owned by the config file: a restart with a
// changed file updates or removes them; records made through the API are
// left alone.
const sourceConfig = "config"

// sealer is the part of the store that encrypts secrets.
type sealer interface {
	Seal([]byte) (cluster.Sealed, error)
	Unseal(cluster.Sealed) ([]byte, error)
}

// siteRecord turns a config site into the stored record, reading and
// sealing its certificate key.
func siteRecord(cfg *config.Config, s config.Site, sl sealer) (cluster.Site, error) {
	rec := cluster.Site{
		Name:           s.Name,
		Domain:         strings.TrimSuffix(strings.ToLower(s.Domain), "."),
		Interface:      s.Interface,
		Relay:          s.Relay,
		Subnet:         s.Subnet,
		Router:         s.Router,
		DNSServers:     s.DNSServers,
		LeaseTime:      s.LeaseTime.Std(),
		NextServer:     s.NextServer,
		BootFile:       s.BootFile,
		Profile:        s.Profile,
		NamingTemplate: s.NamingTemplate,
		AllowTemplate:  s.AllowTemplate,
		Source:         sourceConfig,
	}
	if len(s.Range) == 2 {
		rec.RangeStart, rec.RangeEnd = s.Range[0], s.Range[1]
	}
	for _, r := range s.Reservations {
		rec.Reservations = append(rec.Reservations, cluster.Reservation{
			MAC: strings.ToLower(r.MAC), ClientID: strings.ToLower(strings.ReplaceAll(r.ClientID, ":", "")), IP: r.IP, Hostname: r.Hostname,
		})
	}
	if pc := s.ProvisioningCert; pc != nil {
		chain, err := os.ReadFile(cfg.Path(pc.Chain))
		if err != nil {
			return rec, fmt.Errorf("site %q: %w", s.Name, err)
		}
		key, err := os.ReadFile(cfg.Path(pc.Key))
		if err != nil {
			return rec, fmt.Errorf("site %q: %w", s.Name, err)
		}
		rec.CertChainPEM = string(chain)
		if rec.CertKey, err = sl.Seal(key); err != nil {
			return rec, fmt.Errorf("site %q: %w", s.Name, err)
		}
	}
	if s.AgentTokenFile != "" {
		tok, err := config.ReadAgentToken(cfg.Path(s.AgentTokenFile))
		if err != nil {
			return rec, fmt.Errorf("site %q agent token: %w", s.Name, err)
		}
		if rec.AgentToken, err = sl.Seal([]byte(tok)); err != nil {
			return rec, fmt.Errorf("site %q agent token: %w", s.Name, err)
		}
	}
	return rec, nil
}

func profileRecord(cfg *config.Config, p config.Profile, sl sealer) (cluster.Profile, error) {
	rec := cluster.Profile{
		Name:        p.Name,
		KVM:         boolOr(p.KVM, true),
		SOL:         boolOr(p.SOL, true),
		IDER:        boolOr(p.IDER, true),
		UserConsent: p.UserConsent,
		TimeSync:    boolOr(p.TimeSync, true),
		TLS:         p.TLS,
		Source:      sourceConfig,
	}
	if rec.UserConsent == "" {
		rec.UserConsent = "kvm"
	}
	var err error
	if rec.AdminPassword, err = sealFile(cfg, p.AdminPasswordFile, sl); err != nil {
		return rec, fmt.Errorf("profile %q: %w", p.Name, err)
	}
	if p.MEBxPasswordFile != "" {
		if rec.MEBxPassword, err = sealFile(cfg, p.MEBxPasswordFile, sl); err != nil {
			return rec, fmt.Errorf("profile %q: %w", p.Name, err)
		}
	}
	return rec, nil
}

func sealFile(cfg *config.Config, path string, sl sealer) (cluster.Sealed, error) {
	b, err := os.ReadFile(cfg.Path(path))
	if err != nil {
		return nil, err
	}
	return sl.Seal(bytes.TrimRight(b, "\r\n"))
}

func boolOr(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}

// syncConfig makes the store's config-owned sites and profiles match the
// file, writing only what changed so restarts do not grow the log.
func syncConfig(ctx context.Context, st *cluster.Store, cfg *config.Config, log *slog.Logger) error {
	now := time.Now().UTC()
	wantProfiles := map[string]bool{}
	for _, p := range cfg.Profiles {
		wantProfiles[p.Name] = true
		rec, err := profileRecord(cfg, p, st)
		if err != nil {
			return err
		}
		if cur, ok := st.Profile(p.Name); ok && sameProfile(st, cur, rec) {
			continue
		}
		if err := st.Apply(ctx, cluster.PutProfile{Profile: rec, Time: now}); err != nil {
			return err
		}
		log.Info("profile applied from config", "profile", p.Name)
	}
	wantSites := map[string]bool{}
	for _, s := range cfg.Sites {
		wantSites[s.Name] = true
		rec, err := siteRecord(cfg, s, st)
		if err != nil {
			return err
		}
		if cur, ok := st.Site(s.Name); ok && sameSite(st, cur, rec) {
			continue
		}
		if err := st.Apply(ctx, cluster.PutSite{Site: rec, Time: now}); err != nil {
			return err
		}
		log.Info("site applied from config", "site", s.Name, "domain", rec.Domain, "subnet", rec.Subnet)
	}
	for _, s := range st.Sites() {
		if s.Source == sourceConfig && !wantSites[s.Name] {
			if err := st.Apply(ctx, cluster.DeleteSite{Name: s.Name, Time: now}); err != nil {
				return err
			}
			log.Info("site removed: no longer in config", "site", s.Name)
		}
	}
	for _, p := range st.Profiles() {
		if p.Source == sourceConfig && !wantProfiles[p.Name] {
			if err := st.Apply(ctx, cluster.DeleteProfile{Name: p.Name, Time: now}); err != nil {
				return err
			}
		}
	}
	return nil
}

// sameSealed compares two sealed values by their plaintext: sealing uses a
// fresh nonce each time, so ciphertexts always differ.
func sameSealed(sl sealer, a, b cluster.Sealed) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	pa, errA := sl.Unseal(a)
	pb, errB := sl.Unseal(b)
	return errA == nil && errB == nil && bytes.Equal(pa, pb)
}

func sameSite(sl sealer, a, b cluster.Site) bool {
	if !sameSealed(sl, a.CertKey, b.CertKey) || !sameSealed(sl, a.AgentToken, b.AgentToken) {
		return false
	}
	a.CertKey, b.CertKey, a.AgentToken, b.AgentToken = nil, nil, nil, nil
	return reflect.DeepEqual(a, b)
}

func sameProfile(sl sealer, a, b cluster.Profile) bool {
	if !sameSealed(sl, a.AdminPassword, b.AdminPassword) || !sameSealed(sl, a.MEBxPassword, b.MEBxPassword) {
		return false
	}
	a.AdminPassword, b.AdminPassword, a.MEBxPassword, b.MEBxPassword = nil, nil, nil, nil
	return reflect.DeepEqual(a, b)
}
