// Command amtsim simulates Intel AMT devices for provisioning tests.
//
//	amtsim serve --listen ADDR:PORT --domain D [...]   one device, no DHCP
//	amtsim --count N --interface IF [...]              N devices that boot like hardware
//
// Run either form with --help for every flag.
//
// Go's crypto/x509 refuses certificates whose serial number is negative
// since Go 1.23; firmware takes them. MeshCentral (node-forge) issues a
// device's TLS certificate with a random serial that is negative about
// half the time, and activates real AMT devices with them [inferred:
// MeshCentral is used against real fleets and would otherwise fail one
// activation in two; seen: amtsim refusing one in ten at AddCertificate].
//
//go:debug x509negativeserial=1
package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		err = runServe(ctx, os.Args[2:])
	} else {
		err = runFleet(ctx, os.Args[1:])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "amtsim:", err)
		os.Exit(1)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return b
}
