// This file expands ${NAME} placeholders in argv and env values. The daemon
// adds no shell: an argument stays one argument whatever it contains. When
// the command is itself a shell with a -c script, the values that land in
// the script are quoted so that none can become code (see ExpandAll).

package engine

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
)

// Expand replaces every ${NAME} inside s with vars[NAME]. An unknown name, an
// empty ${} or an unterminated ${ is an error. A "$" not followed by "{" is
// kept as is; there is no escape for a literal "${".
func Expand(s string, vars map[string]string) (string, error) {
	return expand(s, vars, nil)
}

// expand is Expand, with each value passed through quote (nil: as is) at
// the byte offset of its placeholder in s.
func expand(s string, vars map[string]string, quote func(at int, val string) (string, error)) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	rest, off := s, 0
	for {
		i := strings.Index(rest, "${")
		if i < 0 {
			b.WriteString(rest)
			return b.String(), nil
		}
		b.WriteString(rest[:i])
		end := strings.IndexByte(rest[i+2:], '}')
		if end < 0 {
			return "", fmt.Errorf("unterminated ${ in %q", s)
		}
		name := rest[i+2 : i+2+end]
		val, ok := vars[name]
		switch {
		case name == "":
			return "", fmt.Errorf("empty placeholder ${} in %q", s)
		case !ok:
			return "", fmt.Errorf("unknown placeholder ${%s} in %q (known: %s)", name, s, knownNames(vars))
		}
		if quote != nil {
			q, err := quote(off+i, val)
			if err != nil {
				return "", fmt.Errorf("${%s} in shell script %q: %w", name, s, err)
			}
			val = q
		}
		b.WriteString(val)
		n := i + 2 + end + 1
		rest, off = rest[n:], off+n
	}
}

// ExpandAll expands every element of args; the error names the index.
//
// When args runs a shell script (argv[0]'s base name is sh, bash, dash,
// zsh, ash, ksh or mksh, possibly behind env or busybox, and its options
// include -c), the script operand is not pasted into: a value made only of
// inert characters (ASCII letters, digits and . _ - / : @ + = , %, which
// mean the same in every shell context) is inserted as it is, and any other
// value is single-quoted for the quoting context of its placeholder
// (unquoted, inside '…' or inside "…", also within $(…)), a ' in it
// written as: end quote, backslash-quote, reopen quote. A script whose
// quoting cannot be followed for sure (backquotes, $'…', here-documents,
// case, a nested shell or eval, an unterminated quote, a placeholder right
// after a backslash) takes only inert values; any other is an error. The operands after the script ($0, $1, …) are data
// and expanded as usual.
func ExpandAll(args []string, vars map[string]string) ([]string, error) {
	script, strict := shellScript(args)
	out := make([]string, len(args))
	for i, a := range args {
		var v string
		var err error
		if i == script {
			v, err = expandScript(a, vars, strict)
		} else {
			v, err = Expand(a, vars)
		}
		if err != nil {
			return nil, fmt.Errorf("argument %d: %w", i, err)
		}
		out[i] = v
	}
	return out, nil
}

// shells are the base names of argv[0] taken for a POSIX-like shell.
var shells = map[string]bool{"sh": true, "bash": true, "dash": true, "zsh": true, "ash": true, "ksh": true, "mksh": true}

// shellScript returns the index of the -c script in args, or -1. strict is
// set when the script is split by `env -S` first, whose quoting rules are
// not the shell's: then only inert values may land in it.
func shellScript(args []string) (idx int, strict bool) {
	for i := 0; i < len(args); {
		base := filepath.Base(args[i])
		switch {
		case shells[base]:
			return scriptOperand(args, i+1), false
		case base == "busybox" && i+1 < len(args) && shells[args[i+1]]:
			i++
		case base == "env":
			j, split := skipEnv(args, i+1)
			if split {
				return j, true
			}
			i = j
		default:
			return -1, false
		}
	}
	return -1, false
}

// skipEnv returns the index of the program env runs, skipping its options
// and NAME=VALUE assignments; with -S/--split-string it returns the index
// of the string env splits, and split.
func skipEnv(args []string, j int) (int, bool) {
	for j < len(args) {
		a := args[j]
		switch {
		case a == "--":
			return j + 1, false
		case a == "-S" || a == "--split-string":
			return j + 1, true
		case strings.HasPrefix(a, "-S") || strings.HasPrefix(a, "--split-string="):
			return j, true
		case a == "-u" || a == "-C" || a == "--unset" || a == "--chdir":
			j += 2
		case strings.HasPrefix(a, "-"), strings.Contains(a, "="):
			j++
		default:
			return j, false
		}
	}
	return j, false
}

// scriptOperand returns the index of the first operand after a shell's
// options when they include -c (that operand is the script), else -1.
// Options taking an argument (-o NAME, -O NAME, --rcfile FILE,
// --init-file FILE) skip it.
func scriptOperand(args []string, k int) int {
	cflag := false
	for ; k < len(args); k++ {
		a := args[k]
		if a == "--" || a == "-" {
			k++
			break
		}
		if strings.HasPrefix(a, "--") {
			if a == "--rcfile" || a == "--init-file" {
				k++
			}
			continue
		}
		if len(a) < 2 || a[0] != '-' && a[0] != '+' {
			break
		}
		for _, c := range a[1:] {
			switch c {
			case 'c':
				cflag = true
			case 'o', 'O':
				k++
			}
		}
	}
	if cflag && k < len(args) {
		return k
	}
	return -1
}

// inert reports whether every byte of v is an ASCII letter, digit or one of
// . _ - / : @ + = , %: such a value is one plain word in any shell context.
// (config.SafeModelRefChars is the same set; engine does not import config.)
func inert(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._-/:@+=,%", c) >= 0) {
			return false
		}
	}
	return true
}

// expandScript expands the placeholders of a shell script, each value
// quoted for its context (see ExpandAll).
func expandScript(s string, vars map[string]string, strict bool) (string, error) {
	ctx := scanScript(s)
	if strict && ctx.unsupported == "" {
		ctx.unsupported = "env -S splits the string with its own quoting rules"
	}
	return expand(s, vars, func(at int, val string) (string, error) {
		if inert(val) {
			return val, nil
		}
		if ctx.unsupported != "" {
			return "", fmt.Errorf("the value %q has characters a shell acts on, and the script's quoting cannot be followed safely (%s); "+
				"pass it as an operand instead ([sh, -c, 'exec server --model \"$1\"', sh, \"${NAME}\"])", val, ctx.unsupported)
		}
		switch ctx.at[at] {
		case ctxSingle:
			return strings.ReplaceAll(val, "'", `'\''`), nil
		case ctxDouble:
			return `"` + singleQuote(val) + `"`, nil
		case ctxPlain:
			return singleQuote(val), nil
		case ctxComment:
			if !strings.ContainsAny(val, "\n\r") {
				return val, nil
			}
			return "", fmt.Errorf("a value with a line break would end the comment it is in")
		}
		return "", fmt.Errorf("the placeholder follows a backslash, which would escape the quoting")
	})
}

// singleQuote is v in single quotes; a ' in v ends the quote, is written
// escaped, and the quote reopens.
func singleQuote(v string) string { return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'" }

// Quoting contexts of a byte in a shell script.
const (
	ctxPlain   = iota // unquoted (also inside $(…))
	ctxSingle         // inside '…'
	ctxDouble         // inside "…"
	ctxComment        // after # to the end of the line
	ctxEscaped        // right after an escaping backslash
)

// scriptScan is what scanScript learnt of a script: the context at each
// placeholder's offset, and the first construct it cannot follow.
type scriptScan struct {
	at          map[int]int
	unsupported string
}

// reparsers are words after which a script hands text to another parser
// (a nested shell, eval, a remote or other-user shell): quoting for this
// script's context would not protect a value there.
var reparsers = map[string]bool{"eval": true, "su": true, "sudo": true, "runuser": true, "ssh": true, "sh": true, "bash": true,
	"dash": true, "zsh": true, "ash": true, "ksh": true, "mksh": true, "busybox": true, "trap": true, "case": true}

// scanScript follows a POSIX shell's quoting through s: single and double
// quotes, backslashes, comments, and $(…) (with nested parentheses), and
// records the context at the start of every "${". It gives up (sets
// unsupported) on what it does not model.
func scanScript(s string) scriptScan {
	type frame struct {
		dq     bool // inside "…"
		parens int  // open ( in this unquoted frame
	}
	sc := scriptScan{at: map[int]int{}}
	stack := []frame{{}}
	sq, comment, escaped, wordStart := false, false, false, true
	give := func(why string) {
		if sc.unsupported == "" {
			sc.unsupported = why
		}
	}
	word := func(i int) string { // the unquoted word starting at i
		j := i
		for j < len(s) && !strings.ContainsRune(" \t\n;&|()<>'\"`$\\", rune(s[j])) {
			j++
		}
		return s[i:j]
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		top := &stack[len(stack)-1]
		if strings.HasPrefix(s[i:], "${") {
			switch {
			case escaped:
				sc.at[i] = ctxEscaped
			case comment:
				sc.at[i] = ctxComment
			case sq:
				sc.at[i] = ctxSingle
			case top.dq:
				sc.at[i] = ctxDouble
			default:
				sc.at[i] = ctxPlain
			}
			if end := strings.IndexByte(s[i:], '}'); end > 0 {
				i += end // the placeholder is one word part, whatever its name
			}
			escaped, wordStart = false, false
			continue
		}
		switch {
		case escaped:
			escaped = false
			wordStart = false
			continue
		case comment:
			if c == '\n' {
				comment, wordStart = false, true
			}
			continue
		case sq:
			if c == '\'' {
				sq = false
			}
			continue
		case top.dq:
			switch c {
			case '\\':
				escaped = true
			case '"':
				stack = stack[:len(stack)-1]
			case '`':
				give("backquotes")
			case '$':
				if i+1 < len(s) && s[i+1] == '(' {
					stack = append(stack, frame{})
					i++
					wordStart = true // a command starts inside $(
				}
			}
			continue
		}
		if wordStart && reparsers[word(i)] {
			give(fmt.Sprintf("%q re-reads its arguments", word(i)))
		}
		next := byte(0)
		if i+1 < len(s) {
			next = s[i+1]
		}
		switch c {
		case '\\':
			escaped = true
		case '\'':
			sq = true
		case '"':
			stack = append(stack, frame{dq: true})
		case '`':
			give("backquotes")
		case '$':
			switch next {
			case '\'':
				give("$'…' quoting")
			case '(':
				stack = append(stack, frame{})
				i++
				wordStart = true
				continue
			}
		case '(':
			top.parens++
		case ')':
			switch {
			case top.parens > 0:
				top.parens--
			case len(stack) > 1:
				stack = stack[:len(stack)-1]
			default:
				give("an unbalanced )")
			}
		case '#':
			if wordStart {
				comment = true
			}
		case '<':
			if strings.HasPrefix(s[i:], "<<<") {
				i += 2
			} else if next == '<' {
				give("a here-document")
				i++
			}
		}
		wordStart = strings.IndexByte(" \t\n;&|()<>", c) >= 0
	}
	switch {
	case sq:
		give("an unterminated '")
	case escaped:
		give("a trailing backslash")
	case len(stack) > 1:
		if stack[len(stack)-1].dq {
			give("an unterminated \"")
		} else {
			give("an unterminated $(")
		}
	case stack[0].parens > 0:
		give("an unbalanced (")
	}
	return sc
}

func knownNames(vars map[string]string) string {
	names := make([]string, 0, len(vars))
	for k := range vars {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
