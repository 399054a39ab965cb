// Package branchbox holds what the whole module shares: its version.
package branchbox

import (
	_ "embed"
	"strings"
)

//go:embed VERSION
var versionFile string

// Version is the contents of the VERSION file, compiled in so every build
// — make, go build, go test — reports the same version.
var Version = strings.TrimSpace(versionFile)
