// Package agentapi is the server side of branchbox-agent, the agent on a
// managed PC (README.md in this directory is the contract): an HTTPS
// listener whose callers prove, per site and bound to their TLS session,
// that they hold the site's agent token; endpoints to register a device
// for agent-initiated Remote Configuration (an OTP the agent sets in the
// firmware), to read a device's state, and to activate a device from its
// host, the WS-Man traffic relayed by the agent over the upgraded
// connection.
package agentapi

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/internal/httpjson"
	"github.com/branchbox/branchbox/internal/selfsigned"
	"github.com/branchbox/branchbox/provisioner"
	"github.com/branchbox/branchbox/provisioner/hello"
)

// Options configure a Server.
type Options struct {
	Store provisioner.Store
	// Provisioner runs host-based activations (its session slots, device
	// claims and audit trail are shared with hello-started sessions).
	Provisioner *provisioner.Provisioner
	Log         *slog.Logger
	// OTPLifetime of a registration; zero is provisioner.DefaultOTPLifetime.
	OTPLifetime time.Duration
	// RelayTimeout bounds one host-based activation; the agent gives up
	// after 10 minutes too.
	RelayTimeout time.Duration
	Now          func() time.Time
}

// Server answers agents.
type Server struct {
	o      Options
	relays sync.WaitGroup
}

// New applies defaults.
func New(o Options) *Server {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.RelayTimeout == 0 {
		o.RelayTimeout = 10 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Server{o: o}
}

// maxBody caps a request body; an info object is a few KB.
const maxBody = 1 << 20

// Handler serves the endpoints, every one behind the agent proof:
//
//	POST /agent/v1/register        device info → OTP for agent-initiated Remote Configuration
//	GET  /agent/v1/devices/{uuid}  a device of the caller's site
//	POST /agent/v1/activate        host-based activation, relayed over the upgraded connection
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /agent/v1/register", s.register)
	mux.HandleFunc("GET /agent/v1/devices/{uuid}", s.device)
	mux.HandleFunc("POST /agent/v1/activate", s.activate)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Error(w, http.StatusNotFound, fmt.Errorf("no endpoint %s %s", r.Method, r.URL.Path))
	})
	return s.withAuth(mux)
}

// Listen opens the agent listener: TLS 1.3 only (its exporter is what the
// proofs are bound to), with a self-signed certificate kept in dataDir.
func Listen(addr, dataDir string) (net.Listener, error) {
	cert, err := selfsigned.LoadOrCreate(filepath.Join(dataDir, "agent-cert.pem"), filepath.Join(dataDir, "agent-key.pem"), "branchbox agent API", addr)
	if err != nil {
		return nil, fmt.Errorf("agent listener certificate: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return tls.NewListener(ln, &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS13,
		// HTTP/1.1 only: activation upgrades the connection.
		NextProtos: []string{"http/1.1"},
	}), nil
}

// Serve answers on ln until ctx ends, then waits for running relays.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		// Relays run on hijacked connections Shutdown does not wait for;
		// their context ends with ctx.
		BaseContext:  func(net.Listener) context.Context { return ctx },
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:     slog.NewLogLogger(s.o.Log.Handler(), slog.LevelDebug),
	}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	})
	defer stop()
	err := srv.Serve(ln)
	s.relays.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// registered answers a registration; the OTP is shown this once.
type registered struct {
	UUID    string    `json:"uuid"`
	Site    string    `json:"site"`
	Domain  string    `json:"domain"`
	OTP     string    `json:"otp"`
	Expires time.Time `json:"expires"`
}

func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	var in Info
	if err := decode(r, &in); err != nil {
		httpjson.Error(w, http.StatusBadRequest, err)
		return
	}
	info, err := validate(in, "")
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err)
		return
	}
	if code, err := s.precheck(c.site, info, false); err != nil {
		httpjson.Error(w, code, err)
		return
	}
	reg, err := provisioner.RegisterDevice(r.Context(), s.o.Store, provisioner.Registration{
		UUID: info.uuid, AMTVersion: info.AMTVersion, Site: c.site.Name, Lifetime: s.o.OTPLifetime,
	}, s.o.Now())
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, err)
		return
	}
	s.audit(r, "agent.register", reg.UUID, fmt.Sprintf("AMT %s, %s/%s, site %q: one-time password issued, expires %s",
		info.AMTVersion, info.State, info.ControlMode, c.site.Name, reg.Expires.Format(time.RFC3339)))
	w.Header().Set("Cache-Control", "no-store")
	httpjson.WriteStatus(w, http.StatusCreated, registered{UUID: reg.UUID, Site: c.site.Name, Domain: c.site.Domain, OTP: reg.OTP, Expires: reg.Expires})
}

// deviceView is a device as its agent may see it.
type deviceView struct {
	UUID      string    `json:"uuid"`
	Site      string    `json:"site"`
	State     string    `json:"state"`
	LastError string    `json:"last_error"`
	Updated   time.Time `json:"updated"`
}

func (s *Server) device(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	uuid, err := hello.NormalizeUUID(r.PathValue("uuid"))
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err)
		return
	}
	d, ok := s.o.Store.Device(uuid)
	if !ok || d.Site != c.site.Name {
		httpjson.Error(w, http.StatusNotFound, fmt.Errorf("device %s is not known in site %q", uuid, c.site.Name))
		return
	}
	httpjson.WriteStatus(w, http.StatusOK, deviceView{UUID: d.UUID, Site: d.Site, State: d.State, LastError: d.LastError, Updated: d.Updated})
}

func (s *Server) audit(r *http.Request, action, subject, detail string) {
	actor := "agent " + r.RemoteAddr
	if c := callerOf(r); c != nil {
		actor += " of site " + c.site.Name
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
	defer cancel()
	err := s.o.Store.Apply(ctx, cluster.Audit{Entry: cluster.AuditEntry{
		Time: s.o.Now().UTC(), Actor: actor, Action: action, Subject: subject, Detail: detail,
	}})
	if err != nil {
		s.o.Log.Warn("audit write failed", "action", action, "err", err)
	}
}

// decode reads a JSON body to its end: on an upgraded connection, a byte
// left unread would be taken for the start of the agent's first answer.
func decode(r *http.Request, v any) error {
	body := io.LimitReader(r.Body, maxBody)
	if err := json.NewDecoder(body).Decode(v); err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	if _, err := io.Copy(io.Discard, body); err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	return nil
}
