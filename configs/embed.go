// Package configs holds example configurations (see the YAML files beside
// this one) and embeds the demo config that `pool-managerd -demo` runs.
package configs

import _ "embed"

// Demo is demo.yaml: three simulator pools, one of them crashing now and
// then. Parse it with config.Parse(configs.Demo, "demo.yaml").
//
//go:embed demo.yaml
var Demo []byte
