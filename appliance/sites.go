package appliance

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/branchbox/branchbox/appliance/api"
	"github.com/branchbox/branchbox/appliance/config"
	"github.com/branchbox/branchbox/cluster"
)

// siteWriter validates API-written sites with the same rules as the
// config file and stores them.
type siteWriter struct{ a *App }

// configSite maps a stored site back to the config schema, so validation
// of a new site sees every existing one, wherever it came from.
func configSite(s cluster.Site) config.Site {
	cs := config.Site{Name: s.Name, Domain: s.Domain, Interface: s.Interface, Relay: s.Relay, Subnet: s.Subnet,
		Router: s.Router, LeaseTime: config.Duration(s.LeaseTime), Profile: s.Profile}
	if s.RangeStart != "" {
		cs.Range = []string{s.RangeStart, s.RangeEnd}
	}
	return cs
}

func (w siteWriter) PutSite(r *http.Request, body []byte) (cluster.Site, error) {
	s := w.a.Store
	cfg := *w.a.Cfg
	// Profiles may have been added through the store too.
	cfg.Profiles = nil
	for _, p := range s.Profiles() {
		cfg.Profiles = append(cfg.Profiles, config.Profile{Name: p.Name, AdminPasswordFile: "/dev/null"})
	}
	var others []config.Site
	var newName string
	// A PUT of an existing name replaces it, so it must not clash with itself.
	probe, _ := cfg.ParseSite(body, nil)
	newName = probe.Name
	for _, st := range s.Sites() {
		if st.Name != newName {
			others = append(others, configSite(st))
		}
	}
	cs, err := cfg.ParseSite(body, others)
	var errs config.Errors
	if errors.As(err, &errs) {
		ve := &api.ValidationError{}
		for _, e := range errs {
			if e.Path == "site.profile" || e.Path == "profiles" {
				if _, ok := s.Profile(cs.Profile); ok {
					continue
				}
			}
			ve.Problems = append(ve.Problems, e.Error())
		}
		if len(ve.Problems) > 0 {
			return cluster.Site{}, ve
		}
	}
	if cs.ProvisioningCert != nil {
		probe := cfg
		probe.Sites = []config.Site{cs}
		if errs := checkCertificates(&probe); len(errs) > 0 {
			ve := &api.ValidationError{}
			for _, e := range errs {
				ve.Problems = append(ve.Problems, "site"+strings.TrimPrefix(e.Error(), "sites[0]"))
			}
			return cluster.Site{}, ve
		}
	}
	if cur, ok := s.Site(cs.Name); ok && cur.Source == sourceConfig {
		return cluster.Site{}, &api.ValidationError{Problems: []string{fmt.Sprintf("site.name: %q is managed by the config file; change it there", cs.Name)}}
	}
	rec, err := siteRecord(w.a.Cfg, cs, s)
	if err != nil {
		return cluster.Site{}, err
	}
	rec.Source = "api"
	if err := s.Apply(r.Context(), cluster.PutSite{Site: rec, Time: time.Now().UTC()}); err != nil {
		return cluster.Site{}, err
	}
	w.a.audit(r, "site.put", rec.Name, rec.Domain+" "+rec.Subnet)
	return rec, nil
}

func (w siteWriter) DeleteSite(r *http.Request, name string) error {
	cur, ok := w.a.Store.Site(name)
	if !ok {
		return fmt.Errorf("site %q: %w", name, cluster.ErrNotFound)
	}
	if cur.Source == sourceConfig {
		return fmt.Errorf("site %q: %w; remove it there", name, api.ErrManagedByConfig)
	}
	if err := w.a.Store.Apply(r.Context(), cluster.DeleteSite{Name: name, Time: time.Now().UTC()}); err != nil {
		return err
	}
	w.a.audit(r, "site.delete", name, "")
	return nil
}

// audit records an admin action. Failing to audit is logged, not fatal:
// the action itself is already committed.
func (a *App) audit(r *http.Request, action, subject, detail string) {
	e := cluster.AuditEntry{Time: time.Now().UTC(), Actor: "api " + r.RemoteAddr, Action: action, Subject: subject, Detail: detail}
	if err := a.Store.Apply(r.Context(), cluster.Audit{Entry: e}); err != nil {
		a.Log.Warn("audit write failed", "action", action, "err", err)
	}
}
