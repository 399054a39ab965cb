package provisioner

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/internal/httpjson"
	"github.com/branchbox/branchbox/provisioner/certrules"
	"github.com/branchbox/branchbox/provisioner/hello"
	"github.com/branchbox/branchbox/provisioner/setupbin"
)

// Handlers are the provisioner's admin API endpoints. Authentication is
// the API server's job; these assume an authorised caller.
type Handlers struct {
	Store Store
	// ServerAddr is this appliance's address on a site's LAN, written into
	// bare-metal setup.bin files.
	ServerAddr func(site cluster.Site) (netip.Addr, error)
	// HelloPort is the hello listener's port.
	HelloPort uint16
	// Retry starts a new session for a failed device (Provisioner.Retry).
	Retry func(uuid, actor string) error
	Now   func() time.Time
}

// Mount registers the endpoints:
//
//	POST /api/v1/devices/{uuid}/otp     register for agent-initiated activation, returns the OTP once
//	POST /api/v1/devices/{uuid}/retry   re-run provisioning for a failed device
//	POST /api/v1/devices/import         CSV inventory: uuid,hostname,site,profile
//	POST /api/v1/sites/{name}/psk       new PID/PPS pairs, answered as a setup.bin
//	POST /api/v1/sites/{name}/setup.bin bare-metal pointer setup.bin for the site
//	GET  /api/v1/tls/ca                 the management CA certificate (PEM) devices' TLS certificates chain to
func (h *Handlers) Mount(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/tls/ca", h.ManagementCA)
	mux.HandleFunc("POST /api/v1/devices/{uuid}/otp", h.RegisterOTP)
	mux.HandleFunc("POST /api/v1/devices/import", h.ImportInventory)
	mux.HandleFunc("POST /api/v1/devices/{uuid}/retry", h.RetryDevice)
	mux.HandleFunc("POST /api/v1/sites/{name}/psk", h.PSKSetupBin)
	mux.HandleFunc("POST /api/v1/sites/{name}/setup.bin", h.BareMetalSetupBin)
}

const maxBody = 8 << 20

// ManagementCA answers the management CA's certificate as PEM, making the
// CA on first use so a console can trust it before any device has TLS.
// Only the certificate leaves; the key stays sealed in the store.
func (h *Handlers) ManagementCA(w http.ResponseWriter, r *http.Request) {
	a, err := EnsureAuthority(r.Context(), h.Store, h.now())
	if err != nil {
		httpjson.Error(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	io.WriteString(w, a.CertPEM)
}

func (h *Handlers) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

// RegisterOTP takes {"amt_version", "site", "lifetime_seconds"} (all
// optional) and answers {"uuid", "otp", "expires"}.
func (h *Handlers) RegisterOTP(w http.ResponseWriter, r *http.Request) {
	var req struct {
		AMTVersion      string `json:"amt_version"`
		Site            string `json:"site"`
		LifetimeSeconds int    `json:"lifetime_seconds"`
	}
	if err := decodeOptional(r, &req); err != nil {
		httpjson.Error(w, http.StatusBadRequest, err)
		return
	}
	reg, err := RegisterDevice(r.Context(), h.Store, Registration{
		UUID: r.PathValue("uuid"), AMTVersion: req.AMTVersion, Site: req.Site,
		Lifetime: time.Duration(req.LifetimeSeconds) * time.Second,
	}, h.now())
	if err != nil {
		httpjson.Error(w, statusOf(err), err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	httpjson.Write(w, reg)
}

// ImportInventory takes a CSV body and answers {"imported": n}, or 400
// with {"error", "problems": [...]} and nothing written. With ?progress=1
// a valid file is answered as JSON lines while it is written:
// {"done": i, "total": n} every progressEvery rows, then {"imported": n}
// (or {"error": ...} when the store stops part-way).
func (h *Handlers) ImportInventory(w http.ResponseWriter, r *http.Request) {
	var progress func(done, total int)
	streaming := false
	if r.URL.Query().Get("progress") != "" {
		fl, _ := w.(http.Flusher)
		enc := json.NewEncoder(w)
		progress = func(done, total int) {
			if !streaming {
				streaming = true
				w.Header().Set("Content-Type", "application/x-ndjson")
				w.WriteHeader(http.StatusOK)
			}
			if done%progressEvery == 0 {
				enc.Encode(map[string]int{"done": done, "total": total})
				if fl != nil {
					fl.Flush()
				}
			}
		}
	}
	n, err := ImportInventory(r.Context(), h.Store, io.LimitReader(r.Body, maxBody), h.now(), progress)
	var inv *InventoryError
	switch {
	case streaming && err != nil:
		json.NewEncoder(w).Encode(map[string]any{"error": err.Error(), "done": n})
	case streaming:
		json.NewEncoder(w).Encode(map[string]int{"done": n, "total": n, "imported": n})
	case errors.As(err, &inv):
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]any{"error": "inventory rejected", "problems": inv.Problems})
	case err != nil:
		httpjson.Error(w, statusOf(err), err)
	default:
		httpjson.Write(w, map[string]int{"imported": n})
	}
}

// progressEvery is how many inventory rows pass between progress lines.
const progressEvery = 50

type mebxRequest struct {
	CurrentMEBxPassword string `json:"current_mebx_password"`
	NewMEBxPassword     string `json:"new_mebx_password"`
	Count               int    `json:"count"`
}

// PSKSetupBin takes {"count", "new_mebx_password", "current_mebx_password"}
// and answers a setup.bin with one consumable record per new PID/PPS.
// The PIDs are listed in the X-Branchbox-PIDs header.
func (h *Handlers) PSKSetupBin(w http.ResponseWriter, r *http.Request) {
	var req mebxRequest
	if err := decodeOptional(r, &req); err != nil {
		httpjson.Error(w, http.StatusBadRequest, err)
		return
	}
	if req.Count == 0 {
		req.Count = 1
	}
	site := r.PathValue("name")
	mebx := setupbin.MEBx{Current: req.CurrentMEBxPassword, New: req.NewMEBxPassword}
	if _, err := setupbin.PSKRecord(mebx, "AAAAAAAA", "A"); err != nil {
		httpjson.Error(w, http.StatusBadRequest, err) // reject before any pair is stored
		return
	}
	pairs, err := GeneratePSKs(r.Context(), h.Store, site, req.Count, h.now())
	if err != nil {
		httpjson.Error(w, statusOf(err), err)
		return
	}
	f := setupbin.File{Consume: true}
	pids := make([]string, len(pairs))
	for i, p := range pairs {
		rec, err := setupbin.PSKRecord(mebx, p.PID, p.PPS)
		if err != nil {
			httpjson.Error(w, http.StatusBadRequest, err)
			return
		}
		f.Records = append(f.Records, rec)
		pids[i] = p.PID
	}
	w.Header().Set("X-Branchbox-PIDs", strings.Join(pids, ","))
	writeSetupBin(w, f)
}

// BareMetalSetupBin takes {"new_mebx_password", "current_mebx_password"}
// and answers a reusable setup.bin pointing devices at this appliance
// with the site's domain and custom root hash.
func (h *Handlers) BareMetalSetupBin(w http.ResponseWriter, r *http.Request) {
	var req mebxRequest
	if err := decodeOptional(r, &req); err != nil {
		httpjson.Error(w, http.StatusBadRequest, err)
		return
	}
	site, ok := h.Store.Site(r.PathValue("name"))
	if !ok {
		httpjson.Error(w, http.StatusNotFound, fmt.Errorf("site %q: %w", r.PathValue("name"), cluster.ErrNotFound))
		return
	}
	chain, err := certrules.ParseChain([]byte(site.CertChainPEM))
	if err != nil {
		httpjson.Error(w, http.StatusConflict, fmt.Errorf("site %q has no usable provisioning certificate: %w", site.Name, err))
		return
	}
	root, _ := hex.DecodeString(certrules.RootHashes(chain[len(chain)-1]).SHA256)
	if h.ServerAddr == nil {
		httpjson.Error(w, http.StatusInternalServerError, errors.New("appliance address unknown"))
		return
	}
	addr, err := h.ServerAddr(site)
	if err != nil {
		httpjson.Error(w, http.StatusConflict, err)
		return
	}
	rec, err := setupbin.BareMetalRecord(setupbin.BareMetal{
		MEBx:       setupbin.MEBx{Current: req.CurrentMEBxPassword, New: req.NewMEBxPassword},
		DNSSuffix:  site.Domain,
		RootSHA256: root,
		HashName:   "branchbox " + site.Name,
		Server:     addr,
		Port:       h.HelloPort,
	})
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err)
		return
	}
	writeSetupBin(w, setupbin.File{Records: []setupbin.Record{rec}})
}

func writeSetupBin(w http.ResponseWriter, f setupbin.File) {
	b, err := f.Marshal()
	if err != nil {
		httpjson.Error(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="setup.bin"`)
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

// decodeOptional reads a JSON body if there is one.
func decodeOptional(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("request body: %w", err)
	}
	return nil
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, cluster.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, cluster.ErrConflict):
		return http.StatusConflict
	}
	var inv *InventoryError
	var bad *inputError
	if errors.As(err, &inv) || errors.As(err, &bad) {
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// RetryDevice re-runs provisioning for a failed device from its last hello.
func (h *Handlers) RetryDevice(w http.ResponseWriter, r *http.Request) {
	uuid, err := hello.NormalizeUUID(r.PathValue("uuid"))
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err)
		return
	}
	err = h.Retry(uuid, "api "+r.RemoteAddr)
	switch {
	case errors.Is(err, cluster.ErrNotFound):
		httpjson.Error(w, http.StatusNotFound, err)
	case errors.Is(err, ErrNotRetryable):
		httpjson.Error(w, http.StatusConflict, err)
	case err != nil:
		httpjson.Error(w, http.StatusServiceUnavailable, err)
	default:
		httpjson.WriteStatus(w, http.StatusAccepted, map[string]string{"uuid": uuid, "status": "retrying"})
	}
}
