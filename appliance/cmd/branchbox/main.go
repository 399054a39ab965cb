// Command branchbox is the appliance: serve runs it, check-config and
// cert check validate its inputs, ctl talks to a running box.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/branchbox/branchbox"
	"github.com/branchbox/branchbox/appliance"
	"github.com/branchbox/branchbox/appliance/config"
	"github.com/branchbox/branchbox/provisioner/certcheck"
	"github.com/branchbox/branchbox/provisioner/democa"
)

const usage = `branchbox — zero-touch Intel AMT provisioning for a branch LAN

usage:
  branchbox version
  branchbox serve [--config FILE]        run the appliance (no --config: embedded lab default)
  branchbox check-config FILE            validate a config; one line per problem
  branchbox cert check --domain D --chain CHAIN.pem [--key KEY.pem] [--amt-version X.Y]
  branchbox ctl [--config FILE] [--output json|table] COMMAND ...   (branchbox ctl help)
  branchbox demo-ca --domain D --out DIR make a throw-away provisioning CA and chain
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "version", "--version":
		fmt.Fprintln(stdout, branchbox.Version)
		return 0
	case "serve":
		return serve(args[1:], stderr)
	case "check-config":
		return checkConfig(args[1:], stdout, stderr)
	case "cert":
		if len(args) < 2 || args[1] != "check" {
			fmt.Fprintln(stderr, "usage: branchbox cert check --domain D --chain CHAIN.pem [--key KEY.pem]")
			return 2
		}
		return certcheck.RunCertCheck(args[2:], stdout, stderr)
	case "ctl":
		return ctl(args[1:], stdout, stderr)
	case "demo-ca":
		return democa.Run(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
	return 2
}

func serve(args []string, stderr io.Writer) int {
	var path string
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "--config" && i+1 < len(args):
			path = args[i+1]
			i++
		case len(args[i]) > 9 && args[i][:9] == "--config=":
			path = args[i][9:]
		default:
			fmt.Fprintf(stderr, "serve: unknown argument %q\n", args[i])
			return 2
		}
	}
	cfg := config.Default()
	if path != "" {
		var err error
		if cfg, err = appliance.LoadConfig(path); err != nil {
			fmt.Fprintf(stderr, "%s: config is not valid:\n%v\n", path, err)
			return 1
		}
	}
	log := newLogger(cfg.Node.LogLevel, stderr)
	if path == "" {
		log.Info("no --config: running the embedded single-node lab default", "data_dir", cfg.Node.DataDir)
	}
	if os.Getenv("GOGC") == "" {
		// The live heap is small (a branch's records) and every DNS answer
		// and DHCP packet allocates; collecting less often bought ~11% more
		// DNS answers per CPU in bench/dns, for a few MiB of memory.
		debug.SetGCPercent(400)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := appliance.Run(ctx, cfg, branchbox.Version, log); err != nil {
		log.Error("branchbox failed", "err", err)
		return 1
	}
	return 0
}

func checkConfig(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: branchbox check-config FILE")
		return 2
	}
	_, err := appliance.LoadConfig(args[0])
	if errs, ok := err.(config.Errors); ok {
		for _, e := range errs {
			fmt.Fprintln(stdout, e.Error())
		}
		return 1
	}
	if err != nil {
		fmt.Fprintln(stdout, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", args[0])
	return 0
}

func newLogger(level string, w io.Writer) *slog.Logger {
	var l slog.Level
	switch level {
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}
