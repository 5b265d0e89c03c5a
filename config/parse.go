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
	"syscall"

	"gopkg.in/yaml.v3"
)

// MaxFileSize bounds a config file: real configs are a few KiB.
const MaxFileSize = 4 << 20

// Load reads and parses the file at path. A file that cannot be read gives
// the os error (wrapped, so errors.Is(err, fs.ErrNotExist) works); a file
// with problems gives an *Errors listing all of them.
//
// Only a regular file of at most MaxFileSize bytes is read: a named pipe, a
// device (/dev/zero) or a directory is refused at once, without a read that
// could block or never end (the open does not wait for a pipe's writer).
func Load(path string) (*Config, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, path)
}

// ReadFile reads a config file the way Load does: it refuses anything but a
// regular file and a file over MaxFileSize bytes, with an error naming path.
func ReadFile(path string) ([]byte, error) {
	data, err := ReadRegularFile(path, MaxFileSize)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return data, nil
}

// ReadRegularFile reads path if it is a regular file of at most limit bytes.
// A named pipe, a device or a directory is refused at once (the open does
// not wait for a pipe's writer), so no read can block or never end. The
// daemon reads every file it is pointed at (config, token file) this way.
func ReadRegularFile(path string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s)", path, fileKind(fi.Mode()))
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %s; it should be a few KiB", path, sizeName(limit))
	}
	return data, nil
}

func sizeName(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// fileKind names the type of a file that is not a regular one.
func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return "mode " + m.String()
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
