// Pool entries: decoding, resolution against defaults and presets, checks.

package config

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

var poolKeys = append([]string{
	"id", "engine", "engine_version", "model_ref", "command", "env", "host", "port",
	"devices", "min_free_vram_mib", "min_free_ram_mib", "slots", "user", "metrics_path", "reload_allowed", "canary",
}, timingKeys...)

var (
	idRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// pools resolves every entry against base (built-ins plus defaults block)
// and checks what spans pools: unique ids and unique fixed ports.
func (d *decoder) pools(v *yaml.Node, base Pool) []Pool {
	n := d.follow(v, "pools")
	if isNull(n) {
		return []Pool{}
	}
	if n.Kind != yaml.SequenceNode {
		d.addf(v.Line, "pools", "must be a list of pools, not %s", describe(n))
		return []Pool{}
	}
	out := make([]Pool, 0, len(n.Content))
	ids, addrs := map[string]int{}, map[string]string{}
	for i, item := range n.Content {
		path := fmt.Sprintf("pools[%d]", i)
		p, idLine, ok := d.pool(d.follow(item, path), path, base)
		if !ok {
			continue
		}
		p.Line = item.Line
		if first, dup := ids[p.ID]; dup && p.ID != "" {
			d.addf(idLine, path+".id", "duplicate id %q (first at line %d, again at line %d)", p.ID, first, idLine)
		} else if p.ID != "" {
			ids[p.ID] = idLine
		}
		if p.Port != 0 {
			addr := net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
			if other, dup := addrs[addr]; dup {
				d.addf(p.Line, path+".port", "%s is also used by pool %q", addr, other)
			}
			addrs[addr] = p.ID
		}
		out = append(out, p)
	}
	return out
}

// pool resolves one entry: base, then the engine preset, then its own keys.
// It also returns the line of the id, for the duplicate check.
func (d *decoder) pool(n *yaml.Node, path string, base Pool) (Pool, int, bool) {
	if n.Kind != yaml.MappingNode {
		d.addf(n.Line, path, "must be a mapping, not %s", describe(n))
		return Pool{}, 0, false
	}
	p := base
	b := d.fields(n, path, poolKeys...)
	required := func(name string) bool {
		_, ok := b[name]
		if !ok {
			d.addf(n.Line, join(path, name), "required key is missing")
		}
		return ok
	}
	line := func(name string) int { return b[name].Line }

	if required("id") && d.strAt(b, path, "id", &p.ID) && !idRE.MatchString(p.ID) {
		d.addf(line("id"), path+".id", "%q must match %s (lower case, digits, . _ -; at most 63)", p.ID, idRE)
	}
	if required("engine") && d.strAt(b, path, "engine", &p.Engine) {
		if pr, ok := presets[p.Engine]; ok {
			pr.apply(&p)
		} else {
			d.addf(line("engine"), path+".engine", "must be one of %s, not %q", strings.Join(Engines, ", "), p.Engine)
		}
	}
	d.timing(b, path, &p)
	if required("model_ref") && d.strAt(b, path, "model_ref", &p.ModelRef) && strings.TrimSpace(p.ModelRef) == "" {
		d.addf(line("model_ref"), path+".model_ref", "must not be empty")
	} else if p.ModelRef != "" {
		d.checkConfigModelRef(line("model_ref"), path+".model_ref", p.ModelRef)
	}
	d.reloadAllowed(b, path, &p)
	if required("command") {
		p.Command = d.command(b["command"], path+".command")
	}
	if v, ok := b["env"]; ok {
		p.Env = d.env(v, path+".env")
	}
	d.strAt(b, path, "engine_version", &p.EngineVersion)
	d.nonEmpty(b, path, "host", &p.Host)
	d.nonEmpty(b, path, "user", &p.User)
	if d.strAt(b, path, "metrics_path", &p.MetricsPath) && !strings.HasPrefix(p.MetricsPath, "/") {
		d.addf(line("metrics_path"), path+".metrics_path", "must start with \"/\", not %q", p.MetricsPath)
	}
	d.intTo(b, path, "port", 0, 65535, &p.Port)
	d.intTo(b, path, "slots", 0, math.MaxInt32, &p.Slots)
	var vram int64
	if d.intAt(b, path, "min_free_vram_mib", 0, math.MaxInt64, &vram) {
		p.MinFreeVRAMMiB = uint64(vram)
	}
	var ram int64
	if d.intAt(b, path, "min_free_ram_mib", 0, math.MaxInt64, &ram) {
		p.MinFreeRAMMiB = uint64(ram)
	}
	if v, ok := b["devices"]; ok {
		p.Devices = d.devices(v, path+".devices")
	}
	if v, ok := b["canary"]; ok {
		d.canary(v, join(path, "canary"), &p)
	}
	d.crossChecks(b, path, &p)
	idLine := n.Line
	if v, ok := b["id"]; ok {
		idLine = v.Line
	}
	return p, idLine, true
}

// crossChecks catches combinations that parse but cannot work.
func (d *decoder) crossChecks(b block, path string, p *Pool) {
	if v, ok := b["command"]; ok && p.Port == 0 && len(p.Command) > 0 && !usesPlaceholder(p, "${PORT}") {
		d.addf(v.Line, path+".command", "port is 0 (a free port is picked at each start), so command or env must pass ${PORT} to the engine")
	}
	if _, set := p.Env["CUDA_VISIBLE_DEVICES"]; set && len(p.Devices) > 0 {
		d.addf(b["env"].Line, path+".env.CUDA_VISIBLE_DEVICES", "is set by the daemon from devices; list the GPUs in devices only")
	}
}

func usesPlaceholder(p *Pool, ph string) bool {
	for _, s := range p.Command {
		if strings.Contains(s, ph) {
			return true
		}
	}
	for _, s := range p.Env {
		if strings.Contains(s, ph) {
			return true
		}
	}
	return false
}

func (d *decoder) nonEmpty(b block, path, name string, dst *string) {
	if d.strAt(b, path, name, dst) && strings.TrimSpace(*dst) == "" {
		d.addf(b[name].Line, join(path, name), "must not be empty")
	}
}

// command reads the argv list. A plain string is refused rather than split:
// the daemon never adds a shell, so there is no right way to split it.
func (d *decoder) command(v *yaml.Node, path string) []string {
	n := d.follow(v, path)
	if n.Kind != yaml.SequenceNode {
		d.addf(v.Line, path, "must be a list (argv) such as [server, --port, \"${PORT}\"], not %s", describe(n))
		return nil
	}
	if len(n.Content) == 0 {
		d.addf(v.Line, path, "must not be empty")
		return nil
	}
	argv := make([]string, 0, len(n.Content))
	for i, item := range n.Content {
		key := fmt.Sprintf("%s[%d]", path, i)
		s, ok := d.str(item, key)
		if i == 0 && ok && strings.TrimSpace(s) == "" {
			d.addf(item.Line, key, "the program (argv[0]) must not be empty")
		}
		d.placeholders(s, item.Line, key)
		argv = append(argv, s)
	}
	return argv
}

func (d *decoder) env(v *yaml.Node, path string) map[string]string {
	m := map[string]string{}
	for _, e := range d.pairs(v, path) {
		name, key := e.key.Value, join(path, e.key.Value)
		if !envNameRE.MatchString(name) {
			d.addf(e.key.Line, key, "invalid variable name (letters, digits and _, not starting with a digit)")
		}
		if s, ok := d.str(e.val, key); ok {
			d.placeholders(s, e.val.Line, key)
			m[name] = s
		}
	}
	return m
}

// devices reads GPU indices (ints) or UUIDs (strings), kept as written.
func (d *decoder) devices(v *yaml.Node, path string) []string {
	n := d.follow(v, path)
	if n.Kind != yaml.SequenceNode {
		d.addf(v.Line, path, "must be a list of GPU indices or UUIDs, e.g. [0, 1], not %s", describe(n))
		return nil
	}
	var out []string
	listed := map[string]bool{}
	for i, item := range n.Content {
		key := fmt.Sprintf("%s[%d]", path, i)
		it := d.follow(item, key)
		switch {
		case it.ShortTag() == "!!int" && !strings.HasPrefix(it.Value, "-"):
		case it.ShortTag() == "!!str" && strings.TrimSpace(it.Value) != "":
		default:
			d.addf(item.Line, key, "must be a GPU index (>= 0) or UUID, not %s", describe(it))
			continue
		}
		if listed[it.Value] {
			d.addf(item.Line, key, "device %q is listed twice", it.Value)
			continue
		}
		listed[it.Value] = true
		out = append(out, it.Value)
	}
	return out
}

// placeholders checks every ${NAME} in s against Placeholders.
func (d *decoder) placeholders(s string, line int, key string) {
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			return
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			d.addf(line, key, "unterminated placeholder %q (missing \"}\")", s[i:])
			return
		}
		if name := s[i+2 : i+j]; !slices.Contains(Placeholders, name) {
			d.addf(line, key, "unknown placeholder ${%s} (known: ${%s})", name, strings.Join(Placeholders, "}, ${"))
		}
		s = s[i+j+1:]
	}
}

// canaryPresets are the canary's path and body per engine.
var canaryPresets = map[string][2]string{
	"llamacpp": {"/completion", `{"prompt":"a","n_predict":1}`},
	"vllm":     {"/v1/completions", `{"model":"${MODEL_REF}","prompt":"a","max_tokens":1}`},
	"tgi":      {"/v1/completions", `{"model":"${MODEL_REF}","prompt":"a","max_tokens":1}`},
}

// canary reads a pool's canary block: {path, body, timeout, idle_after}, each
// optional for an engine with a preset; {enabled: false} turns it off.
func (d *decoder) canary(v *yaml.Node, path string, p *Pool) {
	b := d.fields(v, path, "enabled", "path", "body", "timeout", "idle_after")
	c := Canary{Enabled: true, Timeout: 30 * time.Second}
	if pr, ok := canaryPresets[p.Engine]; ok {
		c.Path, c.Body = pr[0], pr[1]
	}
	d.boolAt(b, path, "enabled", &c.Enabled)
	if d.strAt(b, path, "path", &c.Path) && !strings.HasPrefix(c.Path, "/") {
		d.addf(b["path"].Line, join(path, "path"), "must start with \"/\", not %q", c.Path)
	}
	if d.strAt(b, path, "body", &c.Body) && !json.Valid([]byte(strings.ReplaceAll(c.Body, "${MODEL_REF}", "m"))) {
		d.addf(b["body"].Line, join(path, "body"), "must be JSON (${MODEL_REF} may stand for the model_ref)")
	}
	d.durAt(b, path, "timeout", true, &c.Timeout)
	d.durAt(b, path, "idle_after", false, &c.IdleAfter) // 0: only before ready
	if c.Enabled && c.Path == "" {
		d.addf(v.Line, join(path, "path"), "engine %q has no canary preset: set path (and body)", p.Engine)
	}
	p.Canary = c
}
