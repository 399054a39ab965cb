// Command configdisk is `make config-disk`: it writes the disk image the
// appliance image reads its config from and keeps its state on.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/branchbox/branchbox/image/configdisk"
)

func main() {
	var o configdisk.Options
	flag.StringVar(&o.Config, "config", "", "branchbox.yaml to put on the disk (required)")
	flag.StringVar(&o.Network, "network", "", "network.conf: one line per interface, NAME ADDR/PREFIX [GATEWAY]")
	flag.StringVar(&o.Out, "out", "image/out/config.img", "disk image to write")
	size := flag.Int64("size-mib", configdisk.DefaultSize>>20, "disk size in MiB (state grows here)")
	flag.Parse()
	if o.Config == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	o.Size = *size << 20
	if err := configdisk.Build(o); err != nil {
		fmt.Fprintln(os.Stderr, "config-disk:", err)
		os.Exit(1)
	}
	extra := ""
	if o.Network != "" {
		extra = ", network.conf"
	}
	fmt.Printf("%s: branchbox.yaml%s, the files it names and branchbox-data/ (ext4, %d MiB)\n", o.Out, extra, *size)
}
