package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/branchbox/branchbox/tests/amtsim/device"
	"github.com/branchbox/branchbox/tests/amtsim/firmware"
	"github.com/branchbox/branchbox/tests/amtsim/hello"
)

// deviceFlags are the per-device settings both modes share.
type deviceFlags struct {
	version     string
	rootHashes  []string
	pkiSuffix   string
	otp         string
	window      time.Duration
	laterWindow time.Duration
	rcfgDigest  bool
	strictACL   bool
	faults      []string
	logLevel    string
	pidPrefix   string
	setupMode   bool
	localPW     string
}

func (df *deviceFlags) register(fs *flag.FlagSet, multi bool) {
	fs.StringVar(&df.version, "amt-version", firmware.DefaultVersion, "firmware profile: 2.6, 3.0, 11.x or 16.x (any X.Y with major 2, 3, 11 or 16)")
	fs.Func("custom-root-hash", "hex SHA-256 (or SHA-1/SHA-384, told apart by length) of a provisioning root to add to the hash table as a custom entry; repeatable", func(s string) error {
		if _, _, err := firmware.ParseHash(s); err != nil {
			return err
		}
		df.rootHashes = append(df.rootHashes, s)
		return nil
	})
	fs.StringVar(&df.pkiSuffix, "pki-suffix", "", "MEBx/USB trusted PKI DNS suffix; takes precedence over the DHCP/--domain suffix")
	fs.StringVar(&df.otp, "otp", "", "ProvisioningServerOTP a local agent set (readable by the provisioning server)")
	fs.DurationVar(&df.window, "window", 24*time.Hour, "provisioning window after boot")
	fs.DurationVar(&df.laterWindow, "later-window", 6*time.Hour, "provisioning window reopened after an unprovision")
	fs.BoolVar(&df.rcfgDigest, "rcfg-digest", false, "during remote configuration demand HTTP digest admin/<MEBx password> (default: the client chain alone authenticates)")
	fs.BoolVar(&df.setupMode, "setup-mode", true, "boot in-provisioning with the provisioning window open (hellos in fleet mode); false boots pre-provisioning with the window closed and no hellos until MEI StartConfiguration (or host-based setup)")
	fs.StringVar(&df.localPW, "local-password", "", "$$OsAdmin password of the local (LMS) endpoint, 1..32 printable ASCII (default random per device; MEI GetLocalSystemAccount hands it out)")
	fs.BoolVar(&df.strictACL, "strict-acl-element", false, "refuse go-wsman-messages v1.8.1's SetAdminACLEntryEx_INPUT spelling instead of logging it")
	help := "fault knob NAME[=VALUE]; repeatable:\n  " + device.FaultNames
	if multi {
		help = "fault knob NAME[=VALUE][@DEVICES] where DEVICES is a list of 1-based indexes and ranges (1,3-5; default all); repeatable:\n  " + device.FaultNames
	}
	fs.Func("fault", help, func(s string) error {
		spec, _, _ := strings.Cut(s, "@")
		if err := new(device.Faults).ApplyFault(spec); err != nil {
			return err
		}
		if _, _, hasList := strings.Cut(s, "@"); hasList && !multi {
			return fmt.Errorf("fault %q: @DEVICES only applies with --count", s)
		}
		df.faults = append(df.faults, s)
		return nil
	})
	if multi {
		fs.StringVar(&df.pidPrefix, "pid-prefix", "", "one-touch (PSK) devices: PID = prefix + device index, zero-padded to 8 characters; the devices send v2 hellos (AMT 2.6/3.0 only; the TLS-PSK session itself is not simulated)")
	}
	fs.StringVar(&df.logLevel, "log-level", "info", "debug, info, warn or error")
}

func (df *deviceFlags) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(df.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", df.logLevel, err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})), nil
}

// config builds the configuration of the index-th device (1-based).
func (df *deviceFlags) config(index int, uuid hello.UUID, log *slog.Logger) (device.Config, error) {
	p, err := firmware.Lookup(df.version)
	if err != nil {
		return device.Config{}, err
	}
	cfg := device.Config{
		UUID: uuid, Profile: p, PKISuffix: df.pkiSuffix, OTP: df.otp, SetupMode: df.setupMode, LocalPassword: df.localPW,
		FirstWindow: df.window, LaterWindow: df.laterWindow, RCFGDigest: df.rcfgDigest,
		StrictElementNames: df.strictACL, Log: log,
	}
	if df.pidPrefix != "" {
		pid := fmt.Sprintf("%s%0*d", strings.ToUpper(df.pidPrefix), 8-len(df.pidPrefix), index)
		if len(pid) != 8 {
			return cfg, fmt.Errorf("--pid-prefix %q: device %d has no 8-character PID", df.pidPrefix, index)
		}
		cfg.PID = pid
	}
	for i, h := range df.rootHashes {
		alg, sum, err := firmware.ParseHash(h)
		if err != nil {
			return cfg, err
		}
		cfg.CustomHashes = append(cfg.CustomHashes, device.CustomHash{Name: fmt.Sprintf("custom %d", i+1), Alg: alg, Sum: sum})
	}
	for _, s := range df.faults {
		spec, list, hasList := strings.Cut(s, "@")
		if hasList {
			in, err := inList(list, index)
			if err != nil {
				return cfg, fmt.Errorf("fault %q: %w", s, err)
			}
			if !in {
				continue
			}
		}
		if err := cfg.Faults.ApplyFault(spec); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// inList reports whether i is in "1,3-5" ("all" or empty means every index).
func inList(list string, i int) (bool, error) {
	if list == "" || list == "all" {
		return true, nil
	}
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return false, fmt.Errorf("device list %q: %w", list, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return false, fmt.Errorf("device list %q: %w", list, err)
			}
		}
		if a <= i && i <= b {
			return true, nil
		}
	}
	return false, nil
}

// randomUUID makes a version-4 UUID.
func randomUUID() hello.UUID {
	var u hello.UUID
	copy(u[:], randomBytes(16))
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}
