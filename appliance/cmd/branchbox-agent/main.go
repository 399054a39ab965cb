// Command branchbox-agent runs on a managed PC: it reads the Intel AMT
// device's identity from the Management Engine, registers it with
// branchbox and hands the firmware its one-time password, opens or closes
// the remote-configuration window, and relays host-based ACM activation
// to the local WS-Man endpoint. It is a small binary on its own: no
// appliance, cluster store or DNS server inside.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/branchbox/branchbox"
	"github.com/branchbox/branchbox/provisioner/agent"
	"github.com/branchbox/branchbox/provisioner/agent/mei"
)

const usage = `branchbox-agent — the branchbox client agent for Intel AMT

usage:
  branchbox-agent [global flags] COMMAND [flags]

commands:
  info                      the device: UUID, versions, state, control mode, DNS suffix, root hashes, MAC, IP
  register                  send info to branchbox; keep the site, domain and one-time password (state dir)
  start [--otp-file F] [--wait D]
                            set the one-time password and open the configuration window; with --wait,
                            wait up to D for branchbox to report the device activated
  stop                      close the configuration window
  activate --acm            host-based admin-control-mode activation relayed through this agent
  version

global flags:
  --mei PATH        MEI device, or unix:PATH for a socket (default /dev/mei0)
  --lms ADDR        local WS-Man endpoint, host:port or unix:PATH (default 127.0.0.1:16992)
  --output FORMAT   table or json (default table)
  --state-dir DIR   where registration.json lives (default /var/lib/branchbox-agent)
  --timeout D       per MEI command, API call and LMS request (default 30s)
server flags (register, start --wait, activate):
  --server URL      branchbox's agent listener, https://HOST[:PORT] (port 9972 by default)
  --site NAME       the site this PC belongs to
  --token-file F    the site's agent token
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are every flag; each command's flag set carries the globals too,
// so they may come before or after the command name.
type options struct {
	mei, lms, output, stateDir string
	timeout                    time.Duration
	server, site, tokenFile    string
	otpFile                    string
	wait                       time.Duration
	acm                        bool
}

func (o *options) global(fs *flag.FlagSet) {
	fs.StringVar(&o.mei, "mei", o.mei, "")
	fs.StringVar(&o.lms, "lms", o.lms, "")
	fs.StringVar(&o.output, "output", o.output, "")
	fs.StringVar(&o.stateDir, "state-dir", o.stateDir, "")
	fs.DurationVar(&o.timeout, "timeout", o.timeout, "")
}

func (o *options) serverFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.server, "server", o.server, "")
	fs.StringVar(&o.site, "site", o.site, "")
	fs.StringVar(&o.tokenFile, "token-file", o.tokenFile, "")
}

// newFlagSet reports errors through run, not the flag package's own
// usage dump.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o := &options{mei: mei.DefaultDevice, lms: agent.DefaultLMS, output: "table", stateDir: agent.DefaultStateDir, timeout: 30 * time.Second}
	g := newFlagSet("branchbox-agent")
	o.global(g)
	if err := g.Parse(args); err != nil {
		return usageError(stderr, err)
	}
	rest := g.Args()
	if len(rest) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd := rest[0]
	fs := newFlagSet(cmd)
	o.global(fs)
	switch cmd {
	case "info", "stop":
	case "register":
		o.serverFlags(fs)
	case "start":
		o.serverFlags(fs)
		fs.StringVar(&o.otpFile, "otp-file", "", "")
		fs.DurationVar(&o.wait, "wait", 0, "")
	case "activate":
		o.serverFlags(fs)
		fs.BoolVar(&o.acm, "acm", false, "")
	case "version", "--version":
		fmt.Fprintln(stdout, branchbox.Version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		return usageError(stderr, fmt.Errorf("unknown command %q", cmd))
	}
	if err := fs.Parse(rest[1:]); err != nil {
		return usageError(stderr, fmt.Errorf("%s: %w", cmd, err))
	}
	if fs.NArg() > 0 {
		return usageError(stderr, fmt.Errorf("%s: unexpected argument %q", cmd, fs.Arg(0)))
	}
	if o.output != "table" && o.output != "json" {
		return usageError(stderr, fmt.Errorf("--output %q: want table or json", o.output))
	}
	if cmd == "activate" && !o.acm {
		return usageError(stderr, errors.New("activate: --acm is required (host-based admin control mode is the only mode)"))
	}
	ag := &agent.Agent{
		MEI: o.mei, LMS: o.lms, StateDir: o.stateDir, Timeout: o.timeout,
		Log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	out := &printer{w: stdout, json: o.output == "json"}
	code, err := dispatch(ctx, cmd, o, ag, out)
	if err != nil {
		fmt.Fprintf(stderr, "branchbox-agent %s: %v\n", cmd, err)
		return 1
	}
	return code
}

func usageError(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "branchbox-agent: %v\n(branchbox-agent help for usage)\n", err)
	return 2
}

func (o *options) api() (*agent.API, error) {
	return agent.NewAPI(o.server, o.site, o.tokenFile, o.timeout)
}

func dispatch(ctx context.Context, cmd string, o *options, ag *agent.Agent, out *printer) (int, error) {
	switch cmd {
	case "info":
		info, err := ag.Info()
		if err != nil {
			return 1, err
		}
		return 0, out.info(info)
	case "register":
		api, err := o.api()
		if err != nil {
			return 1, err
		}
		reg, err := ag.Register(ctx, api)
		if err != nil {
			return 1, err
		}
		// Everything but the OTP: that goes to the firmware only.
		return 0, out.fields([][2]string{
			{"uuid", reg.UUID}, {"site", reg.Site}, {"domain", reg.Domain}, {"expires", reg.Expires.Format(time.RFC3339)},
		})
	case "start":
		return start(ctx, o, ag, out)
	case "stop":
		res, err := ag.Stop()
		if err != nil {
			return 1, err
		}
		return 0, out.fields([][2]string{{"uuid", res.UUID}, {"state", res.State}})
	case "activate":
		api, err := o.api()
		if err != nil {
			return 1, err
		}
		res, err := ag.Activate(ctx, api)
		if err != nil {
			return 1, err
		}
		if err := out.fields([][2]string{{"uuid", res.UUID}, {"state", res.State}, {"control_mode", res.ControlMode},
			{"step", res.Step}, {"error", res.Error}}); err != nil {
			return 1, err
		}
		if !res.Activated() {
			return 1, fmt.Errorf("not activated: step %q: %s", res.Step, orNone(res.Error))
		}
		return 0, nil
	}
	return 2, fmt.Errorf("unknown command %q", cmd)
}

func orNone(s string) string {
	if s == "" {
		return "(no error, but control mode is not acm)"
	}
	return s
}

func start(ctx context.Context, o *options, ag *agent.Agent, out *printer) (int, error) {
	var api *agent.API
	if o.wait > 0 {
		var err error
		if api, err = o.api(); err != nil {
			return 1, err
		}
	}
	var otp, uuid string
	if o.otpFile != "" {
		var err error
		if otp, err = agent.ReadOTPFile(o.otpFile); err != nil {
			return 1, err
		}
	} else {
		reg, err := ag.LoadRegistration()
		if err != nil {
			return 1, err
		}
		otp, uuid = reg.OTP, reg.UUID
	}
	var base agent.DeviceStatus
	if api != nil {
		if uuid == "" {
			info, err := ag.Info()
			if err != nil {
				return 1, err
			}
			uuid = info.UUID
		}
		var err error
		if base, err = ag.Baseline(ctx, api, uuid); err != nil {
			return 1, err
		}
	}
	res, err := ag.Start(otp, uuid)
	if err != nil {
		return 1, err
	}
	fields := [][2]string{{"uuid", res.UUID}, {"state", res.State}}
	if api == nil {
		return 0, out.fields(fields)
	}
	st, werr := ag.Wait(ctx, api, res.UUID, base, o.wait)
	fields = append(fields, [2]string{"server_state", st.State}, [2]string{"last_error", st.LastError})
	if err := out.fields(fields); err != nil {
		return 1, err
	}
	if werr != nil {
		return 1, werr
	}
	if st.State != "activated" {
		return 1, fmt.Errorf("device %s %s: %s", res.UUID, st.State, st.LastError)
	}
	return 0, nil
}

// printer writes `key: value` lines or one JSON object.
type printer struct {
	w    io.Writer
	json bool
}

func (p *printer) fields(kv [][2]string) error {
	if p.json {
		// Ordered keys: build the object by hand from marshalled parts.
		var b strings.Builder
		b.WriteString("{")
		for i, f := range kv {
			k, _ := json.Marshal(f[0])
			v, _ := json.Marshal(f[1])
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, "\n  %s: %s", k, v)
		}
		b.WriteString("\n}\n")
		_, err := io.WriteString(p.w, b.String())
		return err
	}
	for _, f := range kv {
		if _, err := fmt.Fprintf(p.w, "%s: %s\n", f[0], f[1]); err != nil {
			return err
		}
	}
	return nil
}

func (p *printer) info(i agent.Info) error {
	if p.json {
		b, err := json.MarshalIndent(i, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(p.w, "%s\n", b)
		return err
	}
	if err := p.fields([][2]string{
		{"uuid", i.UUID}, {"amt_version", i.AMTVersion}, {"build", i.Build}, {"sku", i.SKU},
		{"state", i.State}, {"control_mode", i.ControlMode}, {"dns_suffix", i.DNSSuffix},
		{"mac", i.MAC}, {"ip", i.IP},
	}); err != nil {
		return err
	}
	for _, h := range i.Hashes {
		flags := []string{}
		if h.Active {
			flags = append(flags, "active")
		}
		if h.Default {
			flags = append(flags, "default")
		}
		if _, err := fmt.Fprintf(p.w, "hash: %s %s %s %s\n", h.Algorithm, h.Hash, flagList(flags), quoteName(h.Name)); err != nil {
			return err
		}
	}
	return nil
}

func flagList(f []string) string {
	if len(f) == 0 {
		return "-"
	}
	return strings.Join(f, ",")
}

// quoteName keeps a name with spaces one field at the end of the line.
func quoteName(n string) string {
	b, _ := json.Marshal(n)
	return string(b)
}
