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
	var others []config.Site
	for _, st := range s.Sites() {
		others = append(others, configSite(st))
	}
	exists := func(name string) bool { _, ok := s.Profile(name); return ok }
	cs, err := w.a.Cfg.ParseSite(body, others, exists)
	var errs config.Errors
	if errors.As(err, &errs) {
		ve := &api.ValidationError{}
		for _, e := range errs {
			ve.Problems = append(ve.Problems, e.Error())
		}
		return cluster.Site{}, ve
	}
	if cs.ProvisioningCert != nil {
		probe := *w.a.Cfg
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
