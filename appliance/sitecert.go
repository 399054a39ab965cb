package appliance

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/internal/httpjson"
	"github.com/branchbox/branchbox/provisioner/certrules"
)

// CertStatus is GET /api/v1/sites/{name}/cert: the site's provisioning
// chain as the dashboard shows it, judged by every certificate rule now.
type CertStatus struct {
	Site         string             `json:"site"`
	Domain       string             `json:"domain"`
	Certificates []CertInfo         `json:"certificates"`
	NotAfter     time.Time          `json:"not_after"` // earliest in the chain
	OK           bool               `json:"ok"`        // no rule fails
	Results      []certrules.Result `json:"results"`
}

// CertInfo is one certificate of a chain.
type CertInfo struct {
	Subject  string    `json:"subject"`
	Issuer   string    `json:"issuer"`
	NotAfter time.Time `json:"not_after"`
	SHA256   string    `json:"sha256"`
}

// certUpload is PUT /api/v1/sites/{name}/cert.
type certUpload struct {
	ChainPEM string `json:"chain_pem"`
	KeyPEM   string `json:"key_pem"`
}

func (a *App) mountSiteCert(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/sites/{name}/cert", a.getSiteCert)
	mux.HandleFunc("PUT /api/v1/sites/{name}/cert", a.putSiteCert)
}

func (a *App) getSiteCert(w http.ResponseWriter, r *http.Request) {
	s, ok := a.Store.Site(r.PathValue("name"))
	if !ok {
		httpjson.Error(w, http.StatusNotFound, fmt.Errorf("site %q: %w", r.PathValue("name"), cluster.ErrNotFound))
		return
	}
	if s.CertChainPEM == "" {
		httpjson.Error(w, http.StatusNotFound, fmt.Errorf("site %q has no provisioning certificate", s.Name))
		return
	}
	var key []byte
	if len(s.CertKey) > 0 {
		var err error
		if key, err = a.Store.Unseal(s.CertKey); err != nil {
			httpjson.Error(w, http.StatusInternalServerError, fmt.Errorf("site %q certificate key: %w", s.Name, err))
			return
		}
	}
	httpjson.Write(w, certStatus(s.Name, s.Domain, []byte(s.CertChainPEM), key))
}

func certStatus(site, domain string, chainPEM, keyPEM []byte) CertStatus {
	st := CertStatus{Site: site, Domain: domain, Certificates: []CertInfo{},
		Results: certrules.CheckPEM(domain, chainPEM, keyPEM, time.Now())}
	st.OK = !certrules.Failed(st.Results)
	chain, err := certrules.ParseChain(chainPEM)
	if err != nil {
		return st
	}
	for _, c := range chain {
		st.Certificates = append(st.Certificates, CertInfo{Subject: c.Subject.String(), Issuer: c.Issuer.String(),
			NotAfter: c.NotAfter.UTC(), SHA256: certrules.RootHashes(c).SHA256})
		if st.NotAfter.IsZero() || c.NotAfter.Before(st.NotAfter) {
			st.NotAfter = c.NotAfter.UTC()
		}
	}
	return st
}

// putSiteCert replaces a site's provisioning chain and key after every
// certificate rule passed: a chain that a device would refuse is never
// stored, and the answer says which rule and why.
func (a *App) putSiteCert(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	s, ok := a.Store.Site(name)
	if !ok {
		httpjson.Error(w, http.StatusNotFound, fmt.Errorf("site %q: %w", name, cluster.ErrNotFound))
		return
	}
	if s.Source == sourceConfig {
		httpjson.Error(w, http.StatusConflict, fmt.Errorf("site %q is managed by the config file; set sites[].provisioning_cert there", name))
		return
	}
	var up certUpload
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&up); err != nil {
		httpjson.Error(w, http.StatusBadRequest, fmt.Errorf("certificate upload: want JSON {chain_pem, key_pem}: %w", err))
		return
	}
	if up.ChainPEM == "" || up.KeyPEM == "" {
		httpjson.Error(w, http.StatusBadRequest, errors.New("certificate upload: chain_pem and key_pem are both required"))
		return
	}
	st := certStatus(s.Name, s.Domain, []byte(up.ChainPEM), []byte(up.KeyPEM))
	if !st.OK {
		var problems []string
		for _, f := range certrules.Failures(st.Results) {
			problems = append(problems, fmt.Sprintf("site.provisioning_cert: rule %s: %s", f.Rule, f.Reason))
		}
		httpjson.WriteStatus(w, http.StatusBadRequest, map[string]any{"error": "certificate refused", "problems": problems, "results": st.Results})
		return
	}
	sealed, err := a.Store.Seal([]byte(up.KeyPEM))
	if err != nil {
		httpjson.Error(w, http.StatusInternalServerError, err)
		return
	}
	s.CertChainPEM, s.CertKey = up.ChainPEM, sealed
	if err := a.Store.Apply(r.Context(), cluster.PutSite{Site: s, Time: time.Now().UTC()}); err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, err)
		return
	}
	a.audit(r, "site.cert", s.Name, fmt.Sprintf("%d certificate(s), valid until %s", len(st.Certificates), st.NotAfter.Format(time.RFC3339)))
	httpjson.Write(w, st)
}
