// Package server runs CoreDNS inside the appliance: it generates the
// Corefile from the dns config, starts CoreDNS in-process through caddy,
// reloads it in place, and hands the live provisioner and lease tables to
// the branchbox plugins.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coredns/caddy"
	"github.com/miekg/dns"

	"github.com/branchbox/branchbox/plugins/dns/leases"
	"github.com/branchbox/branchbox/plugins/dns/provisionserver"
)

// Sources are the live tables the server's Corefile refers to.
type Sources struct {
	ProvisionServer *provisionserver.Table
	Leases          *leases.Table
}

// Server is one running CoreDNS instance.
type Server struct {
	mu      sync.Mutex
	inst    *caddy.Instance
	cfg     Config
	text    string
	id      string
	release func()
}

// startMu serialises everything that touches caddy's process-wide state
// (its instance list and CoreDNS's directive table).
var startMu sync.Mutex

var lastID atomic.Uint64

// Start registers src, generates the Corefile for cfg and starts CoreDNS,
// returning once every listener is open.
func Start(cfg Config, src Sources) (*Server, error) {
	id := "branchbox" + strconv.FormatUint(lastID.Add(1), 10)
	text, err := Corefile(cfg, id)
	if err != nil {
		return nil, err
	}
	release, err := register(id, src)
	if err != nil {
		return nil, err
	}
	startMu.Lock()
	inst, err := caddy.Start(input(text))
	startMu.Unlock()
	if err != nil {
		stop(inst)
		release()
		return nil, fmt.Errorf("starting CoreDNS: %w", err)
	}
	return &Server{inst: inst, cfg: cfg, text: text, id: id, release: release}, nil
}

func register(id string, src Sources) (func(), error) {
	releasePS, err := provisionserver.Register(id, src.ProvisionServer)
	if err != nil {
		return nil, err
	}
	releaseLeases, err := leases.Register(id, src.Leases)
	if err != nil {
		releasePS()
		return nil, err
	}
	return func() { releaseLeases(); releasePS() }, nil
}

func input(corefile string) caddy.Input {
	// Always an explicit input: caddy.LoadCaddyfile would silently fall
	// back to a default server when given nothing.
	return caddy.CaddyfileInput{Filepath: "dns.corefile", Contents: []byte(corefile), ServerTypeName: "dns"}
}

// Reload switches to the configuration for cfg in-process, keeping the
// listeners that stay. If the new configuration fails, the running one
// keeps serving and the error says why.
func (s *Server) Reload(cfg Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	text, err := Corefile(cfg, s.id)
	if err != nil {
		return err
	}
	if text == s.text {
		return nil
	}
	startMu.Lock()
	inst, err := s.inst.Restart(input(text))
	startMu.Unlock()
	if err != nil {
		return fmt.Errorf("reloading CoreDNS (the previous configuration keeps serving): %w", err)
	}
	s.inst, s.cfg, s.text = inst, cfg, text
	return nil
}

// Corefile is the configuration the server is running.
func (s *Server) Corefile() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.text
}

// Stop closes the listeners and runs CoreDNS's shutdown hooks.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := stop(s.inst)
	s.release()
	return err
}

func stop(inst *caddy.Instance) error {
	if inst == nil {
		return nil
	}
	errs := inst.ShutdownCallbacks()
	errs = append(errs, inst.Stop())
	inst.Wait()
	return errors.Join(errs...)
}

// Addr is the UDP address of the generated server block (not of blocks a
// user snippet adds). With a configured port of 0 it is the first server's.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, port, _ := net.SplitHostPort(s.cfg.Listen)
	servers := s.inst.Servers()
	for _, sl := range servers {
		a, ok := sl.LocalAddr().(*net.UDPAddr)
		if ok && (port == "0" || strconv.Itoa(a.Port) == port) {
			return a
		}
	}
	return nil
}

// Probe sends one query for qname to the server and reports whether any
// answer came back: the check behind the appliance's dns health.
func (s *Server) Probe(ctx context.Context, qname string) error {
	addr, ok := s.Addr().(*net.UDPAddr)
	if !ok {
		return errors.New("no UDP listener")
	}
	target := *addr
	if target.IP.IsUnspecified() {
		target.IP = net.IPv4(127, 0, 0, 1)
		if addr.IP.To4() == nil && !addr.IP.Equal(net.IPv6unspecified) {
			target.IP = net.IPv6loopback
		}
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(qname), dns.TypeA)
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	if _, _, err := c.ExchangeContext(ctx, m, target.String()); err != nil {
		return fmt.Errorf("probe %s: %w", target.String(), err)
	}
	return nil
}
