package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/branchbox/branchbox/tests/amtsim/boot"
	"github.com/branchbox/branchbox/tests/amtsim/device"
	"github.com/branchbox/branchbox/tests/amtsim/fleet"
	"github.com/branchbox/branchbox/tests/amtsim/hello"
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
	meiDir := fs.String("mei-dir", "", "directory for each device's host side: DIR/<i>.mei serves the MEI host interface (PTHI), DIR/<i>.lms the LMS-like local WS-Man endpoint (Unix sockets; created if missing)")
	var uuids uuidList
	fs.Var(&uuids, "uuid", "UUID of the next device, so a console can register it (and its OTP) before it boots; repeatable, devices past the list get random UUIDs")
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
	if len(uuids) > *count {
		return fmt.Errorf("--uuid given %d times for --count %d", len(uuids), *count)
	}
	sched, err := boot.ParseSchedule(*schedule)
	if err != nil {
		return err
	}
	log, err := df.logger()
	if err != nil {
		return err
	}
	if *meiDir != "" {
		if err := os.MkdirAll(*meiDir, 0o700); err != nil {
			return fmt.Errorf("--mei-dir: %w", err)
		}
	}
	f, err := fleet.New(fleet.Config{
		Count: *count, Interface: *iface, Schedule: sched, HelloPort: *helloPort, ServerName: *serverName,
		DHCPTimeout: *dhcpTimeout, StatusJSON: *statusJSON, Out: os.Stdout, Log: log, MeiDir: *meiDir,
		DeviceConfig: func(i int) (device.Config, error) { return df.config(i, uuids.pick(i), log) },
	})
	if err != nil {
		return err
	}
	if *statusListen != "" {
		ln, err := net.Listen("tcp", *statusListen)
		if err != nil {
			return fmt.Errorf("status endpoint: %w", err)
		}
		go fleet.ServeStatus(ctx, ln, f.Status)
		fmt.Printf("amtsim: status on http://%s/\n", ln.Addr())
	}
	return f.Run(ctx)
}

// uuidList holds the UUIDs given with --uuid, in device order.
type uuidList []hello.UUID

func (l *uuidList) String() string { return fmt.Sprint(len(*l), " UUIDs") }

func (l *uuidList) Set(v string) error {
	u, err := hello.ParseUUID(v)
	if err != nil {
		return err
	}
	*l = append(*l, u)
	return nil
}

// pick returns the UUID of device i (1-based, as the fleet counts): the
// listed one when there is one, else a random one.
func (l uuidList) pick(i int) hello.UUID {
	if i >= 1 && i <= len(l) {
		return l[i-1]
	}
	return randomUUID()
}
