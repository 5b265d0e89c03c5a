// Model references: what a reload over the API may name, and the check a
// config file's model_ref gets.
//
// A model reference ends up in ${MODEL_REF}, which a pool's command may
// hand to a shell. A reference that comes over the API is therefore
// data that must never become code: CheckModelRef admits only characters
// that are inert in every shell context (see SafeModelRefChars), and a
// pool's optional reload_allowed list narrows what a reload may name.

package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// MaxModelRefLen bounds a model reference from the API, in bytes.
const MaxModelRefLen = 1024

// SafeModelRefChars lists, besides ASCII letters and digits, every
// character a model reference from the API may contain. None of them is
// special to a shell in any quoting context, and there is no whitespace.
const SafeModelRefChars = "._-/:@+=,%"

// shellSpecial are the characters that make a config file's model_ref a
// problem: each one means something to a shell.
const shellSpecial = "$`;|&<>(){}*?!~'\"\\"

// Errors CheckModelRef wraps, so that callers can tell a malformed
// reference (ErrModelRefInvalid) from one the pool does not allow
// (ErrModelRefNotAllowed).
var (
	ErrModelRefInvalid    = errors.New("invalid model reference")
	ErrModelRefNotAllowed = errors.New("model reference not allowed")
)

// IsSafeModelRefChar reports whether c may appear in a model reference
// from the API: an ASCII letter, digit, or one of SafeModelRefChars.
func IsSafeModelRefChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte(SafeModelRefChars, c) >= 0
}

// CheckModelRef checks a model reference that comes from outside the
// config file (the new_model_ref of a reload) for pool. It must be 1 to
// MaxModelRefLen bytes of ASCII letters, digits and SafeModelRefChars (no
// whitespace, control character or shell metacharacter), must not start
// with "-" (an engine would read it as an option) and must have no ".."
// path component. When the pool has reload_allowed, the reference must
// also match one of its entries (see AllowsModelRef). The error wraps
// ErrModelRefInvalid or ErrModelRefNotAllowed and names the problem.
func CheckModelRef(pool Pool, ref string) error {
	if err := checkRefSyntax(ref); err != nil {
		return fmt.Errorf("%w: %v", ErrModelRefInvalid, err)
	}
	if len(pool.ReloadAllowed) > 0 && !AllowsModelRef(pool.ReloadAllowed, ref) {
		return fmt.Errorf("%w: %q matches none of pool %s's reload_allowed (%s)", ErrModelRefNotAllowed,
			ref, pool.ID, strings.Join(pool.ReloadAllowed, ", "))
	}
	return nil
}

func checkRefSyntax(ref string) error {
	switch {
	case ref == "":
		return errors.New("must not be empty")
	case len(ref) > MaxModelRefLen:
		return fmt.Errorf("is %d bytes long, at most %d are allowed", len(ref), MaxModelRefLen)
	case ref[0] == '-':
		return fmt.Errorf("%q starts with \"-\" (an engine would read it as an option)", ref)
	}
	for i := 0; i < len(ref); i++ {
		if c := ref[i]; !IsSafeModelRefChar(c) {
			return fmt.Errorf("character %s at byte %d is not allowed (use ASCII letters, digits and %s)",
				describeChar(c), i, strings.Join(strings.Split(SafeModelRefChars, ""), " "))
		}
	}
	for _, part := range strings.Split(ref, "/") {
		if part == ".." {
			return fmt.Errorf("%q has a \"..\" path component", ref)
		}
	}
	return nil
}

// describeChar names a byte for messages: '$' (a shell metacharacter),
// a space, U+000A (a control character).
func describeChar(c byte) string {
	switch {
	case c == ' ':
		return "' ' (a space)"
	case c < 0x20 || c == 0x7f:
		return fmt.Sprintf("U+%04X (a control character)", c)
	case c >= 0x80:
		return fmt.Sprintf("byte 0x%02X (not ASCII)", c)
	case strings.IndexByte(shellSpecial, c) >= 0:
		return fmt.Sprintf("%q (a shell metacharacter)", c)
	}
	return fmt.Sprintf("%q", c)
}

// AllowsModelRef reports whether ref matches one of the reload_allowed
// entries. An absolute-path entry matches by cleaned path: the entry
// itself or anything below it ("/models/" and "/models" both allow
// "/models/a.gguf", not "/models-old/a.gguf"). Any other entry is a plain
// prefix ("TheBloke/" allows "TheBloke/Llama-2-7B-GGUF"). Matching is
// lexical: a symbolic link under an allowed directory is followed by the
// engine, not by this check.
func AllowsModelRef(allowed []string, ref string) bool {
	for _, a := range allowed {
		if filepath.IsAbs(a) {
			if !filepath.IsAbs(ref) {
				continue
			}
			root, p := filepath.Clean(a), filepath.Clean(ref)
			if p == root || root == "/" || strings.HasPrefix(p, root+"/") {
				return true
			}
			continue
		}
		if strings.HasPrefix(ref, a) {
			return true
		}
	}
	return false
}

// checkConfigModelRef reports a config file's model_ref that holds a
// character a shell would act on. The file's author is trusted (and the
// daemon quotes values inside `sh -c` scripts), but such a reference is
// almost surely a mistake and would be refused over the API.
func (d *decoder) checkConfigModelRef(line int, key, ref string) {
	for i := 0; i < len(ref); i++ {
		if c := ref[i]; c < 0x20 || c == 0x7f || strings.IndexByte(shellSpecial, c) >= 0 {
			d.addf(line, key, "character %s at byte %d: a model reference must not contain shell metacharacters or control characters",
				describeChar(c), i)
			return
		}
	}
}

// reloadAllowed reads a pool's reload_allowed: a list of model roots
// (absolute paths) and reference prefixes. Each entry obeys the rules of
// CheckModelRef.
func (d *decoder) reloadAllowed(b block, path string, p *Pool) {
	v, ok := b["reload_allowed"]
	if !ok {
		return
	}
	key := path + ".reload_allowed"
	n := d.follow(v, key)
	if n.Kind != yaml.SequenceNode {
		d.addf(v.Line, key, "must be a list of model roots or prefixes, e.g. [/models/, \"TheBloke/\"], not %s", describe(n))
		return
	}
	if len(n.Content) == 0 {
		d.addf(v.Line, key, "must not be empty (leave the key out to allow any model reference)")
		return
	}
	out := make([]string, 0, len(n.Content))
	for i, item := range n.Content {
		k := fmt.Sprintf("%s[%d]", key, i)
		s, ok := d.str(item, k)
		if !ok {
			continue
		}
		if err := checkRefSyntax(s); err != nil {
			d.addf(item.Line, k, "%v", err)
			continue
		}
		out = append(out, s)
	}
	p.ReloadAllowed = out
}
