package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"

	"github.com/branchbox/branchbox/tests/amtsim/device"
	"github.com/branchbox/branchbox/tests/amtsim/fleet"
	"github.com/branchbox/branchbox/tests/amtsim/hello"
	"github.com/branchbox/branchbox/tests/amtsim/wsman"
)

// runServe is the single-device mode of contract.md: one factory-fresh
// device in setup mode, no DHCP, no hello.
func runServe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("amtsim serve", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: amtsim serve --listen ADDR:PORT --domain D [--custom-root-hash SHA256HEX]... [--amt-version X.Y] [flags]

Runs one factory-fresh simulated AMT device without DHCP: a TLS server that
checks a presented provisioning chain as the firmware would and answers
WS-Management on /wsman.`)
		fs.PrintDefaults()
	}
	listen := fs.String("listen", "127.0.0.1:16993", "TLS (remote, 16993) address")
	httpListen := fs.String("http-listen", "", "optional plain-HTTP remote (16992) address, up once the device is provisioned")
	localListen := fs.String("local-listen", "", "optional plain-HTTP host-side (LMS, 16992) address for host-based setup; user $$OsAdmin, password --local-password")
	domain := fs.String("domain", "", "the device's DNS suffix (as DHCP option 15 would set it); required")
	uuidFlag := fs.String("uuid", "", "device UUID (default random)")
	localPassword := fs.String("local-password", "", "$$OsAdmin password on --local-listen (required with it)")
	setupMode := fs.Bool("setup-mode", true, "start in-provisioning with the window open; false starts pre-provisioning for host-based setup")
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
	if *localListen != "" && *localPassword == "" {
		return errors.New("serve: --local-listen needs --local-password")
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
	cfg.DNSSuffix, cfg.SetupMode, cfg.LocalPassword = *domain, *setupMode, *localPassword
	cfg.OnChange = func(s device.Status) { fleet.PrintStatus(os.Stdout, fleet.DeviceStatus{Index: 1, Status: s}, false) }
	dev, err := device.New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
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
		lln, err := net.Listen("tcp", *localListen)
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		servers++
		go func() { errc <- wsman.ServeLocal(ctx, dev, lln) }()
		fmt.Printf("amtsim: local WS-Man on http://%s/wsman as %s\n", lln.Addr(), device.LocalUser)
	}
	if *statusListen != "" {
		sln, err := net.Listen("tcp", *statusListen)
		if err != nil {
			return fmt.Errorf("serve: status endpoint: %w", err)
		}
		go fleet.ServeStatus(ctx, sln, func() []fleet.DeviceStatus {
			return []fleet.DeviceStatus{{Index: 1, Interface: "serve", IP: ipOf(ln.Addr()), Status: dev.Status()}}
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

func ipOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	return ""
}
