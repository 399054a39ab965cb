// Package api is the admin REST API (JSON under /api/v1/, bearer token)
// and /metrics, plus the client that `branchbox ctl` uses.
package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/internal/httpjson"
)

// Store is what the API reads and writes.
type Store interface {
	Sites() []cluster.Site
	Site(name string) (cluster.Site, bool)
	Devices() []cluster.Device
	Device(uuid string) (cluster.Device, bool)
	Leases() []cluster.Lease
	Audit(limit int) []cluster.AuditEntry
	// Watch signals (coalesced) after every applied change.
	Watch() (<-chan struct{}, func())
}

// Cluster reports and changes membership.
type Cluster interface {
	Members() ([]cluster.Member, error)
	// Remove takes member id out; Leave takes this node out. Both refuse
	// to leave exactly two voters unless force is set.
	Remove(ctx context.Context, id string, force bool) error
	Leave(ctx context.Context, force bool) error
}

// SiteWriter validates and stores sites written through the API.
type SiteWriter interface {
	// PutSite validates body (a site in the config file's schema, as JSON)
	// against the whole configuration and stores it. A validation failure
	// is a *ValidationError.
	PutSite(r *http.Request, body []byte) (cluster.Site, error)
	DeleteSite(r *http.Request, name string) error
}

// ValidationError lists field problems, one per line.
type ValidationError struct{ Problems []string }

func (e *ValidationError) Error() string { return strings.Join(e.Problems, "\n") }

// Status is GET /api/v1/status.
type Status struct {
	Node     string                   `json:"node"`
	Version  string                   `json:"version"`
	Role     string                   `json:"role"`
	Leader   string                   `json:"leader"`
	Services map[string]ServiceStatus `json:"services"`
}

// ServiceStatus is one service's health.
type ServiceStatus struct {
	OK     bool      `json:"ok"`
	Detail string    `json:"detail,omitempty"`
	Since  time.Time `json:"since"`
}

// Device is the API's view of a device: no history, no secrets.
type Device struct {
	UUID       string    `json:"uuid"`
	Site       string    `json:"site"`
	FQDN       string    `json:"fqdn"`
	State      string    `json:"state"`
	AMTVersion string    `json:"amt_version"`
	IP         string    `json:"ip,omitempty"`
	LastError  string    `json:"last_error"`
	Updated    time.Time `json:"updated"`
}

// DeviceDetail adds the history.
type DeviceDetail struct {
	Device
	Hashes  []string              `json:"hashes,omitempty"`
	History []cluster.DeviceEvent `json:"history"`
}

// Lease is the API's view of a lease.
type Lease struct {
	IP       string    `json:"ip"`
	MAC      string    `json:"mac"`
	Hostname string    `json:"hostname"`
	Site     string    `json:"site"`
	State    string    `json:"state"`
	Expires  time.Time `json:"expires"`
}

// Site is the API's view of a site: the certificate key is never shown.
type Site struct {
	Name      string   `json:"name"`
	Domain    string   `json:"domain"`
	Interface string   `json:"interface,omitempty"`
	Relay     bool     `json:"relay,omitempty"`
	Subnet    string   `json:"subnet"`
	Range     []string `json:"range,omitempty"`
	Router    string   `json:"router,omitempty"`
	LeaseTime string   `json:"lease_time"`
	Profile   string   `json:"profile,omitempty"`
	HasCert   bool     `json:"has_provisioning_cert"`
	// Agents: the site has an agent token, so its devices' branchbox-agent
	// may register and activate (the token itself is never shown).
	Agents     bool   `json:"accepts_agents"`
	Source     string `json:"source"`
	Reserved   int    `json:"reservations"`
	NextServer string `json:"next_server,omitempty"`
}

// Options wires a Server.
type Options struct {
	Store   Store
	Cluster Cluster
	Status  func() Status
	Sites   SiteWriter
	Token   string
	Metrics prometheus.Gatherer
	Log     *slog.Logger
	// Mux may already hold endpoints mounted by services.
	Mux *http.ServeMux
}

// NewServer builds the API's HTTP server.
func NewServer(o Options) *http.Server {
	mux := o.Mux
	if mux == nil {
		mux = http.NewServeMux()
	}
	h := &handlers{o}
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Metrics, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /api/v1/status", h.status)
	mux.HandleFunc("GET /api/v1/devices", h.devices)
	mux.HandleFunc("GET /api/v1/devices/{uuid}", h.device)
	mux.HandleFunc("GET /api/v1/leases", h.leases)
	mux.HandleFunc("GET /api/v1/cluster", h.cluster)
	mux.HandleFunc("DELETE /api/v1/cluster/members/{id}", h.removeMember)
	mux.HandleFunc("POST /api/v1/cluster/leave", h.leave)
	mux.HandleFunc("GET /api/v1/sites", h.sites)
	mux.HandleFunc("POST /api/v1/sites", h.putSite)
	mux.HandleFunc("DELETE /api/v1/sites/{name}", h.deleteSite)
	mux.HandleFunc("GET /api/v1/audit", h.audit)
	mux.HandleFunc("GET /api/v1/events", h.events)
	mux.HandleFunc("GET /api/v1/openapi.json", serveOpenAPI)
	mountUI(mux, o.Token)
	return &http.Server{
		Handler:           authenticate(o.Token, mux),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(o.Log.Handler(), slog.LevelWarn),
	}
}

// authenticate requires the token on every /api/ call but the OpenAPI
// description: as a bearer header (ctl, scripts), or as the dashboard's
// session cookie. A cookie is sent by the browser on its own, so a call
// that changes anything must also carry a header no cross-site form can
// set.
func authenticate(token string, next http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") && r.URL.Path != "/api/v1/openapi.json" {
			ok := subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) == 1
			if !ok && r.Header.Get("Authorization") == "" && validSession(r, token) {
				ok = r.Method == http.MethodGet || r.Method == http.MethodHead || r.Header.Get(uiHeader) == "1"
			}
			if !ok {
				w.Header().Set("WWW-Authenticate", `Bearer realm="branchbox"`)
				httpjson.Error(w, http.StatusUnauthorized, errors.New("missing or wrong API token (see <data_dir>/api.token)"))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

type handlers struct{ o Options }

func (h *handlers) status(w http.ResponseWriter, r *http.Request) { httpjson.Write(w, h.o.Status()) }

func deviceView(d cluster.Device) Device {
	return Device{UUID: d.UUID, Site: d.Site, FQDN: d.FQDN, State: d.State, AMTVersion: d.AMTVersion,
		IP: d.IP, LastError: d.LastError, Updated: d.Updated}
}

func (h *handlers) devices(w http.ResponseWriter, r *http.Request) {
	out := []Device{}
	state, site := r.URL.Query().Get("state"), r.URL.Query().Get("site")
	for _, d := range h.o.Store.Devices() {
		if (state == "" || d.State == state) && (site == "" || d.Site == site) {
			out = append(out, deviceView(d))
		}
	}
	httpjson.Write(w, out)
}

func (h *handlers) device(w http.ResponseWriter, r *http.Request) {
	d, ok := h.o.Store.Device(r.PathValue("uuid"))
	if !ok {
		httpjson.Error(w, http.StatusNotFound, fmt.Errorf("device %q: not found", r.PathValue("uuid")))
		return
	}
	httpjson.Write(w, DeviceDetail{Device: deviceView(d), Hashes: d.Hashes, History: d.History})
}

func (h *handlers) leases(w http.ResponseWriter, r *http.Request) {
	ls := slices.Clone(h.o.Store.Leases())
	cluster.SortLeases(ls)
	out := []Lease{}
	for _, l := range ls {
		out = append(out, Lease{IP: l.IP, MAC: l.MAC, Hostname: l.Hostname, Site: l.Site, State: l.State, Expires: l.Expires})
	}
	httpjson.Write(w, out)
}

func (h *handlers) cluster(w http.ResponseWriter, r *http.Request) {
	m, err := h.o.Cluster.Members()
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, err)
		return
	}
	httpjson.Write(w, m)
}

func (h *handlers) removeMember(w http.ResponseWriter, r *http.Request) {
	h.membershipChange(w, h.o.Cluster.Remove(r.Context(), r.PathValue("id"), r.URL.Query().Get("force") == "1"))
}

func (h *handlers) leave(w http.ResponseWriter, r *http.Request) {
	h.membershipChange(w, h.o.Cluster.Leave(r.Context(), r.URL.Query().Get("force") == "1"))
}

func (h *handlers) membershipChange(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, cluster.ErrNotFound):
		httpjson.Error(w, http.StatusNotFound, err)
	case errors.Is(err, cluster.ErrTwoVoters):
		httpjson.Error(w, http.StatusConflict, err)
	case err != nil:
		httpjson.Error(w, http.StatusServiceUnavailable, err)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// SiteView converts a stored site for output.
func SiteView(s cluster.Site) Site {
	v := Site{Name: s.Name, Domain: s.Domain, Interface: s.Interface, Relay: s.Relay, Subnet: s.Subnet,
		Router: s.Router, LeaseTime: s.LeaseTime.String(), Profile: s.Profile, HasCert: s.CertChainPEM != "",
		Agents: len(s.AgentToken) > 0,
		Source: s.Source, Reserved: len(s.Reservations), NextServer: s.NextServer}
	if s.RangeStart != "" {
		v.Range = []string{s.RangeStart, s.RangeEnd}
	}
	return v
}

func (h *handlers) sites(w http.ResponseWriter, r *http.Request) {
	out := []Site{}
	for _, s := range h.o.Store.Sites() {
		out = append(out, SiteView(s))
	}
	httpjson.Write(w, out)
}

func (h *handlers) putSite(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		httpjson.Error(w, http.StatusRequestEntityTooLarge, errors.New("site body larger than 1 MiB"))
		return
	}
	s, err := h.o.Sites.PutSite(r, body)
	var ve *ValidationError
	switch {
	case errors.As(err, &ve):
		httpjson.WriteStatus(w, http.StatusBadRequest, map[string]any{"error": "invalid site", "problems": ve.Problems})
		return
	case err != nil:
		httpjson.Error(w, http.StatusInternalServerError, err)
		return
	}
	httpjson.WriteStatus(w, http.StatusCreated, SiteView(s))
}

func (h *handlers) deleteSite(w http.ResponseWriter, r *http.Request) {
	err := h.o.Sites.DeleteSite(r, r.PathValue("name"))
	switch {
	case errors.Is(err, cluster.ErrNotFound):
		httpjson.Error(w, http.StatusNotFound, err)
	case errors.Is(err, ErrManagedByConfig):
		httpjson.Error(w, http.StatusConflict, err)
	case err != nil:
		httpjson.Error(w, http.StatusServiceUnavailable, err)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func (h *handlers) audit(w http.ResponseWriter, r *http.Request) {
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit <= 0 {
		limit = 100
	}
	httpjson.Write(w, h.o.Store.Audit(limit))
}

// ErrManagedByConfig marks a change refused because the config file owns
// the record.
var ErrManagedByConfig = errors.New("managed by the config file")
