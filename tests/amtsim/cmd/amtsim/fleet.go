package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/branchbox/branchbox/tests/amtsim/boot"
	"github.com/branchbox/branchbox/tests/amtsim/device"
	"github.com/branchbox/branchbox/tests/amtsim/fleet"
)

// runFleet is the multi-device mode: N devices that boot like hardware.
func runFleet(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("amtsim", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: amtsim --count N --interface IF [--custom-root-hash HEX]... [--status-listen ADDR] [--status-json] [flags]
       amtsim serve --help     (single device, no DHCP)

Brings up N factory-fresh AMT devices, each a macvlan with its own MAC on IF in
the current network namespace (needs root). Each device gets its address by
DHCP, learns option 15, resolves ProvisionServer.<suffix> through the DHCP DNS
server, sends hellos on the schedule while its window is open and serves
WS-Management over TLS on <its address>:16993. State changes are printed on
stdout, one line per change.`)
		fs.PrintDefaults()
	}
	count := fs.Int("count", 1, "number of devices")
	iface := fs.String("interface", "", "parent interface for the devices' macvlans (required)")
	statusListen := fs.String("status-listen", "", "serve GET / with the JSON status of all devices on this address")
	statusJSON := fs.Bool("status-json", false, "print state changes as JSON lines instead of text")
	schedule := fs.String("hello-schedule", boot.DefaultSchedule, "hello retry schedule COUNTxINTERVAL,... (shorten for tests, e.g. 3x2s,100x10s)")
	helloPort := fs.Int("hello-port", 9971, "provisioning server port the hello goes to")
	serverName := fs.String("server-name", "ProvisionServer", "host label resolved under the DNS suffix")
	dhcpTimeout := fs.Duration("dhcp-timeout", 5*time.Second, "per-attempt DHCP timeout")
	var df deviceFlags
	df.register(fs, true)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (single-device mode is \"amtsim serve\")", fs.Args())
	}
	if *iface == "" {
		return errors.New("--interface is required (or use \"amtsim serve\")")
	}
	sched, err := boot.ParseSchedule(*schedule)
	if err != nil {
		return err
	}
	log, err := df.logger()
	if err != nil {
		return err
	}
	f, err := fleet.New(fleet.Config{
		Count: *count, Interface: *iface, Schedule: sched, HelloPort: *helloPort, ServerName: *serverName,
		DHCPTimeout: *dhcpTimeout, StatusJSON: *statusJSON, Out: os.Stdout, Log: log,
		DeviceConfig: func(i int) (device.Config, error) { return df.config(i, randomUUID(), log) },
	})
	if err != nil {
		return err
	}
	if *statusListen != "" {
		ln, err := net.Listen("tcp", *statusListen)
		if err != nil {
			return fmt.Errorf("status endpoint: %w", err)
		}
		srv := &http.Server{Handler: f.StatusHandler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		fmt.Printf("amtsim: status on http://%s/\n", ln.Addr())
	}
	return f.Run(ctx)
}
