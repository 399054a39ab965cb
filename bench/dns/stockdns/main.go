// Command stockdns is stock CoreDNS, built from the same coredns module as
// branchbox, with the plugins the DNS benchmark's peer Corefile uses. It
// is CoreDNS's own main (coremain.Run) with a shorter plugin list, the
// way CoreDNS documents building with a custom plugin.cfg.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/file"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/metrics"
)

func main() { coremain.Run() }
