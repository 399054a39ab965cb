// Package provisioner turns AMT hellos into activated devices: it listens
// for hellos (amt-protocol.md §2), picks the site and its provisioning
// certificate, names the device, checks its one-time password, runs the
// Remote Configuration session (package session) and records every step
// in the replicated store.
package provisioner

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/provisioner/certrules"
	"github.com/branchbox/branchbox/provisioner/hello"
	"github.com/branchbox/branchbox/provisioner/session"
)

// Tuning of the activation session; zero values take session's defaults.
type SessionTuning struct {
	CommitWait     time.Duration
	VerifyFor      time.Duration
	Retries        int
	Backoff        time.Duration
	RequestTimeout time.Duration
}

// Options configure a Provisioner.
type Options struct {
	Store   Store
	Log     *slog.Logger
	Metrics prometheus.Registerer
	// NodeID names this node in audit entries.
	NodeID string
	// DevicePort is where devices answer WS-Man over TLS (16993).
	DevicePort int
	// MaxSessions bounds concurrent activations; more wait their turn.
	// Sessions spend most of their time waiting (on the device, and the
	// post-commit restart), so the bound is about memory, not CPU.
	MaxSessions int
	// MaxQueued bounds devices waiting for a session slot; hellos past
	// it are dropped (the device will send another).
	MaxQueued int
	// MaxConns bounds hello connections being read at once.
	MaxConns int
	// ReadTimeout bounds reading one hello.
	ReadTimeout time.Duration
	// HellosPerMinute and HelloBurst limit each source address.
	HellosPerMinute, HelloBurst int
	// StaleAfter is when an "activating" record left by a dead node may
	// be taken over.
	StaleAfter time.Duration
	Session    SessionTuning
	Now        func() time.Time
}

// Provisioner is the hello listener and the sessions it starts.
type Provisioner struct {
	o        Options
	log      *slog.Logger
	m        *metrics
	limiter  *rateLimiter
	certs    certCache
	ca       issuerCache
	conns    chan struct{}
	sessions chan struct{}

	mu       sync.Mutex
	inflight map[string]bool // device UUIDs queued or in a session here
	serving  context.Context // Serve's, for sessions an admin starts
	wg       sync.WaitGroup
}

// New applies defaults and builds a Provisioner.
func New(o Options) *Provisioner {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.DevicePort == 0 {
		o.DevicePort = 16993
	}
	if o.MaxSessions == 0 {
		o.MaxSessions = 256
	}
	if o.MaxQueued == 0 {
		o.MaxQueued = 4096
	}
	if o.MaxConns == 0 {
		o.MaxConns = 512
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = 10 * time.Second
	}
	if o.HellosPerMinute == 0 {
		o.HellosPerMinute = 20
	}
	if o.HelloBurst == 0 {
		o.HelloBurst = 10
	}
	if o.StaleAfter == 0 {
		o.StaleAfter = 15 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.NodeID == "" {
		o.NodeID, _ = os.Hostname()
	}
	return &Provisioner{
		o:        o,
		log:      o.Log,
		m:        newMetrics(o.Metrics),
		limiter:  newRateLimiter(o.HellosPerMinute, o.HelloBurst),
		conns:    make(chan struct{}, o.MaxConns),
		sessions: make(chan struct{}, o.MaxSessions),
		inflight: map[string]bool{},
	}
}

// Serve accepts hellos on ln until ctx ends, then waits for running
// sessions to stop.
func (p *Provisioner) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer p.wg.Wait()
	p.mu.Lock()
	p.serving = ctx
	p.mu.Unlock()
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("hello listener: %w", err)
			}
			// Out of file descriptors under a flood, or a transient
			// error: back off and keep listening, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.log.Warn("hello listener: accept failed; retrying", "err", err, "in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		backoff = 0
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.handleConn(ctx, conn)
		}()
	}
}

func (p *Provisioner) handleConn(ctx context.Context, conn net.Conn) {
	src := remoteAddr(conn)
	// The provisioner dials back to whoever sent a hello, so only
	// addresses on a site LAN may trigger that.
	if _, ok := siteFor(p.o.Store.Sites(), src); !ok {
		conn.Close()
		p.m.hellos.WithLabelValues("outside").Inc()
		// Logged under the same per-source limit, so a scan cannot flood the log.
		if p.limiter.allow("outside "+src.String(), p.o.Now()) {
			p.log.Info("hello ignored: source outside every site subnet", "src", src)
		}
		return
	}
	if !p.limiter.allow(src.String(), p.o.Now()) {
		conn.Close()
		p.m.hellos.WithLabelValues("rate_limited").Inc()
		p.log.Debug("hello ignored: rate limit", "src", src)
		return
	}
	select {
	case p.conns <- struct{}{}:
	default:
		conn.Close()
		p.m.hellos.WithLabelValues("busy").Inc()
		return
	}
	data, err := readHello(conn, p.o.ReadTimeout)
	<-p.conns
	if err != nil {
		p.m.hellos.WithLabelValues("invalid").Inc()
		p.log.Info("hello dropped", "src", src, "err", err)
		return
	}
	h, err := hello.Parse(data)
	if err != nil {
		p.m.hellos.WithLabelValues("invalid").Inc()
		p.log.Info("invalid hello", "src", src, "bytes", len(data), "err", err)
		return
	}
	p.onHello(ctx, src, h, p.o.Now())
}

func remoteAddr(conn net.Conn) netip.Addr {
	if ta, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	ap, err := netip.ParseAddrPort(conn.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// readHello reads until the device closes, never answering. A deadline
// ends a sender that never closes; what it sent is still parsed.
func readHello(conn net.Conn, timeout time.Duration) ([]byte, error) {
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(timeout))
	data, err := io.ReadAll(io.LimitReader(conn, hello.MaxSize+1))
	if len(data) > hello.MaxSize {
		return nil, fmt.Errorf("hello larger than %d bytes", hello.MaxSize)
	}
	var ne net.Error
	if err != nil && !(errors.As(err, &ne) && ne.Timeout() && len(data) > 0) {
		return nil, fmt.Errorf("reading hello: %w", err)
	}
	return data, nil
}

// onHello queues the device of a hello for a session.
func (p *Provisioner) onHello(ctx context.Context, src netip.Addr, h hello.Hello, at time.Time) {
	p.queue(ctx, &job{p: p, src: src, h: h, uuid: h.UUIDString(), at: at, id: requestID()})
}

// queue coalesces duplicates and runs the job when the device has none.
func (p *Provisioner) queue(ctx context.Context, j *job) {
	uuid := j.uuid
	p.mu.Lock()
	if p.inflight[uuid] {
		p.mu.Unlock()
		p.m.hellos.WithLabelValues("duplicate").Inc()
		return
	}
	if len(p.inflight) >= p.o.MaxQueued {
		p.mu.Unlock()
		p.m.hellos.WithLabelValues("busy").Inc()
		return
	}
	p.inflight[uuid] = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.inflight, uuid)
		p.mu.Unlock()
	}()
	p.m.hellos.WithLabelValues("accepted").Inc()
	j.run(ctx)
}

func requestID() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return hex.EncodeToString(b)
}

// job is one hello's way from "seen" to "activated" or "failed".
type job struct {
	p     *Provisioner
	src   netip.Addr
	h     hello.Hello
	uuid  string
	at    time.Time
	id    string
	guard []string // IfStateNot for writes made before the session
	// origin says who started the job when it was not the device's hello.
	origin string
}

func (j *job) run(ctx context.Context) {
	p, st := j.p, j.p.o.Store
	site, ok := siteFor(st.Sites(), j.src)
	if !ok {
		return
	}
	dev, haveDev := st.Device(j.uuid)
	j.guard = []string{cluster.DeviceActivating}
	if haveDev && dev.State == cluster.DeviceActivating && p.o.Now().Sub(dev.Updated) > p.o.StaleAfter {
		j.guard = nil // the node that claimed it is gone
	}
	detail := fmt.Sprintf("hello v%d (retry %d) from %s", j.h.Version, j.h.RetryCount, j.src)
	if j.origin != "" {
		detail = fmt.Sprintf("%s: the last hello from %s again", j.origin, j.src)
	}
	empty := ""
	err := j.update(ctx, cluster.DeviceUpdate{
		Site: site.Name, IP: j.src.String(), Hashes: j.h.HashStrings(), PID: j.h.PID,
		State: cluster.DeviceSeen, LastError: &empty, IfStateNot: j.guard,
		Event: cluster.DeviceEvent{State: cluster.DeviceSeen, Step: stepHello, Detail: detail},
	})
	if errors.Is(err, cluster.ErrConflict) {
		p.m.hellos.WithLabelValues("duplicate").Inc()
		return
	}
	if err != nil {
		p.log.Error("recording hello", "uuid", j.uuid, "err", err)
		return
	}
	j.audit(ctx, "hello", detail)

	params, err := j.prepare(ctx, site, dev, haveDev)
	if err != nil {
		// Not claimed yet: a session another hello started must not be
		// overwritten by this one's failure.
		j.fail(ctx, err.Error(), cluster.DeviceActivating)
		return
	}

	select {
	case p.sessions <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-p.sessions }()

	err = j.update(ctx, cluster.DeviceUpdate{
		State: cluster.DeviceActivating, FQDN: params.fqdn, Profile: params.profile, IfStateNot: j.guard,
		Event: cluster.DeviceEvent{State: cluster.DeviceActivating, Step: "session", Detail: "connecting to " + params.session.Addr},
	})
	if errors.Is(err, cluster.ErrConflict) {
		p.m.hellos.WithLabelValues("duplicate").Inc()
		return
	}
	if err != nil {
		p.log.Error("claiming device", "uuid", j.uuid, "err", err)
		return
	}
	// The OTP is consumed only by the job that owns the device, so a
	// losing duplicate never burns it.
	if params.session.OTP, err = j.takeOTP(ctx); err != nil {
		j.fail(ctx, err.Error())
		return
	}
	j.activate(ctx, params.session, session.Activate)
}

type prepared struct {
	session session.Params
	profile string
	fqdn    string
	cert    *siteCert
}

// prepare gathers everything a session needs; an error is the reason the
// device cannot be activated, as an admin should read it.
func (j *job) prepare(ctx context.Context, site cluster.Site, dev cluster.Device, haveDev bool) (prepared, error) {
	p, st := j.p, j.p.o.Store
	var out prepared
	if j.h.Version == hello.VersionPSK {
		where := "unknown PID " + j.h.PID
		if pair, ok := st.PSK(j.h.PID); ok {
			where = fmt.Sprintf("PID %s of site %q", j.h.PID, pair.Site)
		}
		return out, fmt.Errorf("PSK session not supported (Go's TLS has no PSK cipher suites; %s): provision this device with a bare-metal setup.bin instead", where)
	}
	sc, err := p.certs.get(st, site)
	if err != nil {
		return out, err
	}
	if len(sc.failures) > 0 {
		return out, fmt.Errorf("site %q provisioning certificate fails firmware rules: %s", site.Name, rulesError(sc.failures))
	}
	if r := certrules.CheckRootHash(sc.chain, j.h.HashStrings()); r.Status == certrules.Fail {
		return out, fmt.Errorf("site %q provisioning certificate fails firmware rule %s: %s", site.Name, r.Rule, r.Reason)
	}
	fqdn, source, err := deviceFQDN(st, site, cluster.Device{UUID: j.uuid, Hostname: dev.Hostname}, haveDev, j.src.String())
	if err != nil {
		return out, err
	}
	j.audit(ctx, "name", fmt.Sprintf("%s (from %s), certificate %s", fqdn, source, sc.cn))
	out.fqdn, out.cert = fqdn, sc

	out.profile = site.Profile
	if haveDev && dev.Inventoried && dev.Profile != "" {
		out.profile = dev.Profile
	}
	prof, ok := st.Profile(out.profile)
	if !ok {
		return out, fmt.Errorf("profile %q of site %q does not exist", out.profile, site.Name)
	}
	admin, err := st.Unseal(prof.AdminPassword)
	if err != nil || len(admin) == 0 {
		return out, fmt.Errorf("profile %q has no usable admin password", prof.Name)
	}
	var mebx []byte
	if len(prof.MEBxPassword) > 0 {
		if mebx, err = st.Unseal(prof.MEBxPassword); err != nil {
			return out, fmt.Errorf("profile %q MEBx password: %w", prof.Name, err)
		}
	}
	features, err := j.features(ctx, prof, fqdn)
	if err != nil {
		return out, err
	}
	t := p.o.Session
	out.session = session.Params{
		Addr:           netip.AddrPortFrom(j.src, uint16(p.o.DevicePort)).String(),
		TLS:            sc.tls,
		AdminPassword:  string(admin),
		MEBxPassword:   string(mebx),
		TimeSync:       prof.TimeSync,
		Features:       features,
		CommitWait:     t.CommitWait,
		VerifyFor:      t.VerifyFor,
		Retries:        t.Retries,
		Backoff:        t.Backoff,
		RequestTimeout: t.RequestTimeout,
		Log:            p.log.With("uuid", j.uuid),
		Now:            p.o.Now,
	}
	return out, nil
}

// features is what the profile configures after activation; with TLS the
// device gets a certificate for fqdn from the management CA.
func (j *job) features(ctx context.Context, prof cluster.Profile, fqdn string) (*session.Features, error) {
	f := &session.Features{SOL: prof.SOL, IDER: prof.IDER, KVM: prof.KVM, UserConsent: prof.UserConsent}
	if f.UserConsent == "" {
		f.UserConsent = "kvm" // the config's default
	}
	if !prof.TLS {
		return f, nil
	}
	iss, err := j.p.ca.get(ctx, j.p.o.Store, j.p.o.Now())
	if err != nil {
		return nil, fmt.Errorf("profile %q wants TLS: %w", prof.Name, err)
	}
	f.TLS = &session.TLSCertificate{
		FQDN:  fqdn,
		Issue: func(pub *rsa.PublicKey) ([]byte, error) { return iss.issue(fqdn, pub, j.p.o.Now()) },
		Roots: iss.roots,
	}
	return f, nil
}

// takeOTP consumes the device's registered one-time password, if any:
// exactly once, through the store, before the session can compare it.
func (j *job) takeOTP(ctx context.Context) (string, error) {
	st := j.p.o.Store
	if _, ok := st.OTP(j.uuid); !ok {
		return "", nil
	}
	err := st.Apply(ctx, cluster.ConsumeOTP{UUID: j.uuid, RequestID: j.id, Time: j.p.o.Now().UTC()})
	switch {
	case errors.Is(err, cluster.ErrConsumed):
		return "", errors.New("the device's one-time password was already used; register a new one")
	case errors.Is(err, cluster.ErrExpired):
		return "", errors.New("the device's one-time password expired; register a new one")
	case err != nil:
		return "", fmt.Errorf("consuming one-time password: %w", err)
	}
	// Read again: the secret to compare is the one this consume won, not
	// one a concurrent registration replaced.
	o, ok := st.OTP(j.uuid)
	if !ok || o.ConsumedBy != j.id {
		return "", errors.New("the device's one-time password was replaced while it was being used; register a new one")
	}
	secret, err := st.Unseal(o.Secret)
	if err != nil {
		return "", fmt.Errorf("one-time password: %w", err)
	}
	j.audit(ctx, "otp", "one-time password consumed for comparison")
	return string(secret), nil
}

// activate runs a session and records its outcome. The error is the
// reason recorded on the device.
func (j *job) activate(ctx context.Context, sp session.Params, run func(context.Context, session.Params) (session.Result, error)) (session.Result, error) {
	p := j.p
	p.m.inflight.Inc()
	defer p.m.inflight.Dec()
	sp.Step = func(step, detail string) { j.audit(ctx, step, detail) }
	res, err := run(ctx, sp)
	if err != nil {
		p.m.activations.WithLabelValues("failed").Inc()
		if res.Activated {
			// The admin password is set; only the profile is incomplete.
			err = fmt.Errorf("activated in admin control mode, but applying the profile failed: %w", err)
		}
		j.fail(ctx, err.Error())
		return res, err
	}
	p.m.activations.WithLabelValues("activated").Inc()
	p.m.duration.Observe(p.o.Now().Sub(j.at).Seconds())
	empty := ""
	detail := "activated in admin control mode"
	if res.Recovered {
		detail += " (confirmed by reading state back)"
	}
	if err := j.update(ctx, cluster.DeviceUpdate{
		State: cluster.DeviceActivated, AMTVersion: res.AMTVersion, LastError: &empty,
		Event: cluster.DeviceEvent{State: cluster.DeviceActivated, Step: "done", Detail: detail},
	}); err != nil {
		p.log.Error("recording activation", "uuid", j.uuid, "err", err)
	}
	j.audit(ctx, "activated", detail)
	p.log.Info("device activated", "uuid", j.uuid, "src", j.src, "amt", res.AMTVersion)
	return res, nil
}

// fail records why a device cannot be activated. unlessState guards the
// write for a job that does not own the device.
func (j *job) fail(ctx context.Context, reason string, unlessState ...string) {
	err := j.update(ctx, cluster.DeviceUpdate{
		State: cluster.DeviceFailed, LastError: &reason, IfStateNot: unlessState,
		Event: cluster.DeviceEvent{State: cluster.DeviceFailed, Step: "failed", Detail: reason},
	})
	if errors.Is(err, cluster.ErrConflict) {
		return // another job owns the device and will record its outcome
	}
	j.p.m.failures.WithLabelValues(failureReason(reason)).Inc()
	j.p.log.Info("device failed", "uuid", j.uuid, "src", j.src, "reason", reason)
	if err != nil {
		j.p.log.Error("recording failure", "uuid", j.uuid, "err", err)
	}
	j.audit(ctx, "failed", reason)
}

// update writes to the device record. Writes after a shutdown began still
// go through, briefly, so no device is left "activating".
func (j *job) update(ctx context.Context, u cluster.DeviceUpdate) error {
	u.UUID, u.Time = j.uuid, j.p.o.Now().UTC()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return j.p.o.Store.Apply(wctx, u)
}

func (j *job) audit(ctx context.Context, step, detail string) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := j.p.o.Store.Apply(wctx, cluster.Audit{Entry: cluster.AuditEntry{
		Time: j.p.o.Now().UTC(), Actor: "provisioner@" + j.p.o.NodeID,
		Action: "activation." + step, Subject: j.uuid, Detail: detail,
	}})
	if err != nil {
		j.p.log.Warn("audit write failed", "uuid", j.uuid, "step", step, "err", err)
	}
}
