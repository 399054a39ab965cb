package config

import (
	_ "embed"
	"os"
)

//go:embed default.yaml
var defaultYAML []byte

// DataDirEnv overrides the embedded default's data directory.
const DataDirEnv = "BRANCHBOX_DATA"

// Default returns the embedded single-node lab configuration, with its data
// in $BRANCHBOX_DATA or ./data.
func Default() *Config {
	cfg, err := Parse(defaultYAML, ".")
	if err != nil {
		panic("embedded default config: " + err.Error())
	}
	cfg.Node.DataDir = "data"
	if d := os.Getenv(DataDirEnv); d != "" {
		cfg.Node.DataDir = d
	}
	return cfg
}
