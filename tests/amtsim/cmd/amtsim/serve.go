package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/branchbox/branchbox/tests/amtsim/device"
	"github.com/branchbox/branchbox/tests/amtsim/fleet"
	"github.com/branchbox/branchbox/tests/amtsim/hello"
	"github.com/branchbox/branchbox/tests/amtsim/mei"
	"github.com/branchbox/branchbox/tests/amtsim/wsman"
)

// runServe is the single-device mode of contract.md: one device, no DHCP,
// no hello; in setup mode unless --setup-mode=false, optionally with its
// host side (MEI, LMS) for an OS agent.
func runServe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("amtsim serve", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: amtsim serve --listen ADDR:PORT --domain D [--custom-root-hash SHA256HEX]... [--amt-version X.Y] [flags]

Runs one simulated AMT device without DHCP: a TLS server that checks a
presented provisioning chain as the firmware would and answers WS-Management
on /wsman; with --mei-socket and --local-listen also the host side an OS agent
uses (MEI host interface, LMS-like local WS-Man).`)
		fs.PrintDefaults()
	}
	listen := fs.String("listen", "127.0.0.1:16993", "TLS (remote, 16993) address")
	httpListen := fs.String("http-listen", "", "optional plain-HTTP remote (16992) address, up once the device is provisioned")
	localListen := fs.String("local-listen", "", "optional plain-HTTP host-side (LMS, 16992) endpoint for host-based setup, ADDR:PORT or unix:PATH; user $$OsAdmin (password --local-password, or read over --mei-socket), and admin once activated")
	meiSocket := fs.String("mei-socket", "", "optional Unix socket PATH serving the MEI host interface (PTHI) as /dev/mei0 would")
	domain := fs.String("domain", "", "the device's DNS suffix (as DHCP option 15 would set it); required")
	uuidFlag := fs.String("uuid", "", "device UUID (default random)")
	statusListen := fs.String("status-listen", "", "serve GET / with the device's JSON status (as the fleet's, features included) on this address")
	var df deviceFlags
	df.register(fs, false)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *domain == "" {
		return errors.New("serve: --domain is required")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected arguments %q", fs.Args())
	}
	if *localListen != "" && df.localPW == "" && *meiSocket == "" {
		return errors.New("serve: --local-listen needs --local-password or --mei-socket (to read the random one)")
	}
	log, err := df.logger()
	if err != nil {
		return err
	}
	uuid := randomUUID()
	if *uuidFlag != "" {
		if uuid, err = hello.ParseUUID(*uuidFlag); err != nil {
			return err
		}
	}
	cfg, err := df.config(1, uuid, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	cfg.DNSSuffix = *domain
	if ta, ok := ln.Addr().(*net.TCPAddr); ok && ta.IP.To4() != nil && !ta.IP.IsUnspecified() {
		cfg.IPv4 = ta.IP
	}
	cfg.OnChange = func(s device.Status) { fleet.PrintStatus(os.Stdout, fleet.DeviceStatus{Index: 1, Status: s}, false) }
	dev, err := device.New(cfg)
	if err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() { errc <- wsman.ServeRemote(ctx, dev, ln) }()
	servers := 1
	if *httpListen != "" {
		hln, err := net.Listen("tcp", *httpListen)
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		servers++
		go func() { errc <- wsman.ServeRemoteHTTP(ctx, dev, hln) }()
	}
	if *localListen != "" {
		lln, err := listenLocal(*localListen)
		if err != nil {
			return fmt.Errorf("serve: --local-listen: %w", err)
		}
		servers++
		go func() { errc <- wsman.ServeLocal(ctx, dev, lln) }()
		where := "http://" + lln.Addr().String() + "/wsman"
		if lln.Addr().Network() == "unix" {
			where = "unix:" + lln.Addr().String()
		}
		fmt.Printf("amtsim: local WS-Man on %s as %s\n", where, device.LocalUser)
	}
	if *meiSocket != "" {
		mln, err := mei.ListenUnix(*meiSocket)
		if err != nil {
			return fmt.Errorf("serve: --mei-socket: %w", err)
		}
		servers++
		go func() { errc <- mei.Serve(ctx, dev, mln) }()
		fmt.Printf("amtsim: MEI host interface on unix:%s\n", *meiSocket)
	}
	if *statusListen != "" {
		sln, err := net.Listen("tcp", *statusListen)
		if err != nil {
			return fmt.Errorf("serve: status endpoint: %w", err)
		}
		go fleet.ServeStatus(ctx, sln, func() []fleet.DeviceStatus {
			return []fleet.DeviceStatus{fleet.Snapshot(1, "serve", dev)}
		})
		fmt.Printf("amtsim: status on http://%s/\n", sln.Addr())
	}
	st := dev.Status()
	fmt.Printf("amtsim: device %s AMT %s (%s) domain %s listening on %s\n", st.UUID, st.AMTVersion, cfg.Profile.Name, *domain, ln.Addr())
	for ; servers > 0; servers-- {
		if err := <-errc; err != nil {
			return err
		}
	}
	return nil
}

// listenLocal opens the LMS-like endpoint: TCP ADDR:PORT, or unix:PATH as
// the agent's --lms unix:PATH reaches it.
func listenLocal(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		return mei.ListenUnix(path)
	}
	return net.Listen("tcp", addr)
}
