package boot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/branchbox/branchbox/tests/amtsim/device"
)

// Step is "Count hellos, Every apart".
type Step struct {
	Count int
	Every time.Duration
}

// Schedule is the hello retry schedule.
type Schedule []Step

// DefaultSchedule follows amt-protocol.md §2.5: once a minute for 5 minutes,
// every 5 minutes for an hour, then hourly for the rest of the day.
const DefaultSchedule = "5x1m,11x5m,23x1h"

// ParseSchedule reads "5x1m,11x5m,23x1h".
func ParseSchedule(s string) (Schedule, error) {
	var out Schedule
	for _, part := range strings.Split(s, ",") {
		n, d, ok := strings.Cut(strings.TrimSpace(part), "x")
		count, err := strconv.Atoi(n)
		if !ok || err != nil || count < 1 {
			return nil, fmt.Errorf("hello schedule %q: step %q is not COUNTxDURATION", s, part)
		}
		every, err := time.ParseDuration(d)
		if err != nil || every <= 0 {
			return nil, fmt.Errorf("hello schedule %q: step %q: bad duration", s, part)
		}
		out = append(out, Step{Count: count, Every: every})
	}
	return out, nil
}

// delay is the wait after the n-th hello (0-based); false when the schedule
// is exhausted.
func (s Schedule) delay(n int) (time.Duration, bool) {
	for _, st := range s {
		if n < st.Count {
			return st.Every, true
		}
		n -= st.Count
	}
	return 0, false
}

// maxRetry is the largest retry count Intel documents for the hello.
const maxRetry = 14

// Hello sends the device's hellos.
type Hello struct {
	Device     *device.Device
	Interface  string // bind sockets here ("" = no binding)
	LocalIP    net.IP
	DNS        []net.IP
	ServerName string // default "ProvisionServer"
	ServerIP   net.IP // static setup-server address (MEBx var 2.17); skips DNS
	Port       int    // default 9971
	Schedule   Schedule
	Log        *slog.Logger
	// OnSent is told about every hello attempt (err nil when delivered).
	OnSent func(retry uint32, server string, err error)

	dnsPort string // tests only: DNS servers on a port other than 53
}

// Run sends hellos while the window is open, restarting the schedule when the
// device reboots or the window reopens, until ctx ends.
func (h *Hello) Run(ctx context.Context) {
	if h.Port == 0 {
		h.Port = 9971
	}
	if h.ServerName == "" {
		h.ServerName = "ProvisionServer"
	}
	var retry uint32
	n := 0 // position in the schedule
	var next time.Time
	wasOpen := false
	lastReboot := h.Device.RebootUntil()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		open := h.Device.WindowOpen()
		if r := h.Device.RebootUntil(); !r.Equal(lastReboot) || (open && !wasOpen) {
			// A rebooted device, or one whose window reopened, starts its
			// schedule again; the retry counter keeps counting.
			lastReboot, n, next = r, 0, time.Time{}
		}
		wasOpen = open
		if open && !time.Now().Before(next) {
			if d, ok := h.Schedule.delay(n); ok {
				server, err := h.send(ctx, retry)
				if h.OnSent != nil {
					h.OnSent(retry, server, err)
				}
				if err != nil {
					h.Log.Warn("hello not delivered", "retry", retry, "err", err.Error())
				} else {
					h.Log.Info("hello sent", "retry", retry, "server", server)
				}
				if retry < maxRetry {
					retry++
				}
				n++
				next = time.Now().Add(d)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// send resolves the server and delivers one hello: one write, then close.
func (h *Hello) send(ctx context.Context, retry uint32) (string, error) {
	pkt, err := h.Device.Hello(retry)
	if err != nil {
		return "", err
	}
	raw, err := pkt.Marshal()
	if err != nil {
		return "", err
	}
	ips := []net.IP{h.ServerIP}
	if h.ServerIP == nil {
		suffix := h.Device.TrustedSuffix()
		if suffix == "" {
			return "", errors.New("no DNS suffix (no PKI suffix, no DHCP option 15): nothing to resolve")
		}
		if ips, err = h.resolve(ctx, h.ServerName+"."+suffix); err != nil {
			return "", err
		}
	}
	var errs []error
	for _, ip := range ips {
		addr := net.JoinHostPort(ip.String(), strconv.Itoa(h.Port))
		if err := h.deliver(ctx, addr, raw); err != nil {
			errs = append(errs, err)
			continue
		}
		return addr, nil
	}
	return "", errors.Join(errs...)
}

func (h *Hello) dialer() *net.Dialer {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if h.Interface != "" {
		d.Control = BindToDevice(h.Interface)
	}
	if h.LocalIP != nil {
		d.LocalAddr = &net.TCPAddr{IP: h.LocalIP}
	}
	return d
}

func (h *Hello) deliver(ctx context.Context, addr string, raw []byte) error {
	c, err := h.dialer().DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("hello to %s: %w", addr, err)
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(raw); err != nil {
		return fmt.Errorf("hello to %s: %w", addr, err)
	}
	return nil
}

// resolve asks the DHCP-given DNS servers for A records of name.
func (h *Hello) resolve(ctx context.Context, name string) ([]net.IP, error) {
	if len(h.DNS) == 0 {
		return nil, fmt.Errorf("resolve %s: DHCP gave no DNS server", name)
	}
	d := h.dialer()
	if h.LocalIP != nil {
		d.LocalAddr = &net.UDPAddr{IP: h.LocalIP}
	}
	client := &dns.Client{Net: "udp", Dialer: d, Timeout: 3 * time.Second}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	port := "53"
	if h.dnsPort != "" {
		port = h.dnsPort
	}
	var errs []error
	for _, server := range h.DNS {
		resp, _, err := client.ExchangeContext(ctx, q, net.JoinHostPort(server.String(), port))
		if err != nil {
			errs = append(errs, fmt.Errorf("resolve %s at %s: %w", name, server, err))
			continue
		}
		if resp.Rcode != dns.RcodeSuccess {
			errs = append(errs, fmt.Errorf("resolve %s at %s: %s", name, server, dns.RcodeToString[resp.Rcode]))
			continue
		}
		var ips []net.IP
		for _, rr := range resp.Answer {
			if a, ok := rr.(*dns.A); ok {
				ips = append(ips, a.A)
			}
		}
		if len(ips) > 0 {
			return ips, nil
		}
		errs = append(errs, fmt.Errorf("resolve %s at %s: no A record", name, server))
	}
	return nil, errors.Join(errs...)
}
