// Parse and Load: the file as a whole and its top-level blocks.

package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Load reads and parses the file at path. A file that cannot be read gives
// the os error (wrapped, so errors.Is(err, fs.ErrNotExist) works); a file
// with problems gives an *Errors listing all of them.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, path)
}

// Parse parses and validates a config; name is used in messages (usually
// the file's path). On any problem it returns nil and an *Errors.
func Parse(data []byte, name string) (*Config, error) {
	d := &decoder{}
	var c *Config
	if root := d.document(data); root != nil {
		c = d.config(root)
	}
	if len(d.probs) > 0 {
		return nil, newErrors(name, d.probs)
	}
	return c, nil
}

// document returns the file's single YAML document, or nil after reporting
// why there is none.
func (d *decoder) document(data []byte) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			d.addf(0, "", "file is empty: expected a mapping with at least \"pools\"")
		} else {
			d.yamlError(err)
		}
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		d.addf(extra.Line, "", "a second YAML document (after ---) is not allowed")
	} else if !errors.Is(err, io.EOF) {
		d.yamlError(err)
	}
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		d.addf(0, "", "file is empty: expected a mapping with at least \"pools\"")
		return nil
	}
	return doc.Content[0]
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (d *decoder) yamlError(err error) {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		d.addf(line, "", "YAML syntax: %s", m[2])
		return
	}
	d.addf(0, "", "YAML syntax: %s", strings.TrimPrefix(msg, "yaml: "))
}

var driverVersionRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+)*$`)

func (d *decoder) config(root *yaml.Node) *Config {
	c := defaultConfig()
	b := d.fields(root, "", "listen", "shutdown_deadline", "auth", "state_dir", "cgroup_parent", "log", "gpu", "defaults", "pools")

	if d.strAt(b, "", "listen", &c.Listen) {
		if err := CheckListen(c.Listen); err != nil {
			d.addf(b["listen"].Line, "listen", "%v", err)
		}
	}
	d.durAt(b, "", "shutdown_deadline", false, &c.ShutdownDeadline)
	if d.strAt(b, "", "state_dir", &c.StateDir) && !filepath.IsAbs(c.StateDir) {
		d.addf(b["state_dir"].Line, "state_dir", "must be an absolute path, not %q", c.StateDir)
	}
	if d.strAt(b, "", "cgroup_parent", &c.CgroupParent) {
		if v := c.CgroupParent; v != "auto" && v != "off" && (!filepath.IsAbs(v) || filepath.Clean(v) != v) {
			d.addf(b["cgroup_parent"].Line, "cgroup_parent", "must be auto, off or a clean absolute path under the cgroup2 mount, not %q", v)
		}
	}
	if v, ok := b["auth"]; ok {
		a := d.fields(v, "auth", "token_file")
		if d.strAt(a, "auth", "token_file", &c.Auth.TokenFile) && strings.TrimSpace(c.Auth.TokenFile) == "" {
			d.addf(a["token_file"].Line, "auth.token_file", "must not be empty")
		}
	}
	if v, ok := b["log"]; ok {
		l := d.fields(v, "log", "format", "level")
		d.oneOf(l, "log", "format", &c.Log.Format, "auto", "json", "text")
		d.oneOf(l, "log", "level", &c.Log.Level, "debug", "info", "warn", "error")
	}
	if v, ok := b["gpu"]; ok {
		g := d.fields(v, "gpu", "require_nvidia", "min_driver_version")
		d.boolAt(g, "gpu", "require_nvidia", &c.GPU.RequireNVIDIA)
		if d.strAt(g, "gpu", "min_driver_version", &c.GPU.MinDriverVersion) && !driverVersionRE.MatchString(c.GPU.MinDriverVersion) {
			d.addf(g["min_driver_version"].Line, "gpu.min_driver_version",
				"must be digits and dots, like \"535.0\" or \"535.104.05\", not %q", c.GPU.MinDriverVersion)
		}
	}

	base := builtinPool()
	if v, ok := b["defaults"]; ok {
		d.timing(d.fields(v, "defaults", timingKeys...), "defaults", &base)
	}
	if v, ok := b["pools"]; ok {
		c.Pools = d.pools(v, base)
	}
	return c
}

func (d *decoder) oneOf(b block, path, name string, dst *string, allowed ...string) {
	if d.strAt(b, path, name, dst) && !slices.Contains(allowed, *dst) {
		d.addf(b[name].Line, join(path, name), "must be one of %s, not %q", strings.Join(allowed, ", "), *dst)
	}
}
