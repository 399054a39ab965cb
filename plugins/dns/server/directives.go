package server

import (
	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"

	// The stock plugins branchbox's chain and user snippets may use. Each
	// must be imported (to register it) and listed in directives (to
	// place it); coremain and the all-plugins package are deliberately
	// not imported.
	_ "github.com/coredns/coredns/plugin/acl"
	_ "github.com/coredns/coredns/plugin/any"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/file"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/minimal"
	_ "github.com/coredns/coredns/plugin/rewrite"
	_ "github.com/coredns/coredns/plugin/template"
	_ "github.com/coredns/coredns/plugin/whoami"

	_ "github.com/branchbox/branchbox/plugins/dns/leases"
	_ "github.com/branchbox/branchbox/plugins/dns/metrics"
	_ "github.com/branchbox/branchbox/plugins/dns/provisionserver"
)

// directives is the execution order of every plugin a Corefile may name;
// the order in a Corefile itself does not matter. Stock plugins keep their
// relative order from CoreDNS's plugin.cfg. Ours come before cache, so
// cache only ever holds forwarded answers and never serves a stale
// ProvisionServer or lease record; provisionserver and leases count their
// own answers, and metrics counts what passes them.
var directives = []string{
	"bind",
	"errors",
	"log",
	"acl",
	"any",
	"loadbalance",
	"provisionserver",
	"leases",
	"metrics",
	"cache",
	"rewrite",
	"minimal",
	"template",
	"hosts",
	"file",
	"forward",
	"whoami",
}

func init() {
	if err := dnsserver.SetDirectives(directives); err != nil {
		panic(err)
	}
	// CoreDNS and caddy print start-up banners to stdout otherwise.
	dnsserver.Quiet = true
	caddy.Quiet = true
}
