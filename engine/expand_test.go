package engine_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pool-managerd/pool-managerd/engine"
)

// hostile are values that would run `touch MARKER` (or break the word)
// if they were pasted into a shell script unquoted or in the wrong quotes.
var hostile = []string{
	"$(touch MARKER)m", "`touch MARKER`", "'; touch MARKER; '", `"; touch MARKER; "`, "m; touch MARKER",
	"m\ntouch MARKER", "m && touch MARKER", "m | touch MARKER", "'\"'\"'$(touch MARKER)", `\'$(touch MARKER)`,
	`m\`, `'\''`, "$HOME", "*", "  two  words  ", "!1", "~", "a'b", `a"b`, "", "${X}", "$(touch MARKER",
	"'", `"`, "#x", "{a,b}", "x)$(touch MARKER)",
}

// TestExpandAllShellScriptRunsNothing runs every hostile value through
// ExpandAll into real shells, in each quoting context a script can give a
// placeholder, and requires that the shell sees exactly the value as data
// and that the file an injection would create never appears.
func TestExpandAllShellScriptRunsNothing(t *testing.T) {
	var shells []string
	for _, sh := range []string{"sh", "dash", "bash", "zsh", "ksh", "mksh"} {
		if p, err := exec.LookPath(sh); err == nil {
			shells = append(shells, p)
		}
	}
	if len(shells) == 0 {
		t.Skip("no shell in PATH")
	}
	contexts := []struct{ name, script, before, after string }{
		{"plain", `printf '%s|' ${MODEL_REF}`, "", ""},
		{"double quotes", `printf '%s|' "<${MODEL_REF}>"`, "<", ">"},
		{"single quotes", `printf '%s|' '<${MODEL_REF}>'`, "<", ">"},
		{"glued", `printf '%s|' x${MODEL_REF}y`, "x", "y"},
		{"command substitution", `printf '%s|' "$(printf '%s' "<${MODEL_REF}>")"`, "<", ">"},
		{"plain in command substitution", `printf '%s|' "$(printf '%s' ${MODEL_REF})"`, "", ""},
		{"after a comment", "# don't mind me\nprintf '%s|' ${MODEL_REF}", "", ""},
		{"exec", `exec printf '%s|' ${MODEL_REF}`, "", ""},
	}
	for _, sh := range shells {
		for _, c := range contexts {
			t.Run(filepath.Base(sh)+"/"+c.name, func(t *testing.T) {
				dir := t.TempDir()
				for _, v := range hostile {
					if strings.Contains(c.name, "command substitution") && strings.HasSuffix(v, "\n") {
						continue
					}
					argv, err := engine.ExpandAll([]string{sh, "-c", c.script}, map[string]string{"MODEL_REF": v})
					if err != nil {
						t.Fatalf("value %q: %v", v, err)
					}
					cmd := exec.Command(argv[0], argv[1:]...)
					cmd.Dir = dir
					out, err := cmd.CombinedOutput()
					if err != nil {
						t.Errorf("value %q: script %q: %v: %s", v, argv[2], err, out)
						continue
					}
					if want := c.before + v + c.after + "|"; string(out) != want {
						t.Errorf("value %q: script %q printed %q, want %q", v, argv[2], out, want)
					}
					if _, err := os.Stat(filepath.Join(dir, "MARKER")); err == nil {
						t.Fatalf("value %q: script %q ran the injected command", v, argv[2])
					}
				}
			})
		}
	}
}

func TestExpandAllShellDetection(t *testing.T) {
	vars := map[string]string{"MODEL_REF": "a b", "PORT": "1"}
	quoted, raw := "'a b'", "a b"
	for _, tc := range []struct {
		argv []string
		idx  int    // the argument to look at
		want string // its expansion, with MODEL_REF at ${MODEL_REF}
	}{
		{[]string{"sh", "-c", "x ${MODEL_REF}"}, 2, "x " + quoted},
		{[]string{"/bin/bash", "-lc", "x ${MODEL_REF}"}, 2, "x " + quoted},
		{[]string{"bash", "-e", "-o", "pipefail", "-c", "x ${MODEL_REF}"}, 5, "x " + quoted},
		{[]string{"bash", "-eo", "pipefail", "-c", "x ${MODEL_REF}"}, 4, "x " + quoted},
		{[]string{"bash", "--norc", "-c", "--", "x ${MODEL_REF}"}, 4, "x " + quoted},
		{[]string{"zsh", "-c", "x ${MODEL_REF}", "zsh", "${MODEL_REF}"}, 4, raw}, // $1: data
		{[]string{"env", "-i", "FOO=1", "-u", "BAR", "dash", "-c", "x ${MODEL_REF}"}, 7, "x " + quoted},
		{[]string{"/usr/bin/env", "--", "ksh", "-c", "x ${MODEL_REF}"}, 4, "x " + quoted},
		{[]string{"busybox", "ash", "-c", "x ${MODEL_REF}"}, 3, "x " + quoted},
		{[]string{"sh", "script.sh", "${MODEL_REF}"}, 2, raw},           // no -c: a file, args are data
		{[]string{"srv", "-c", "x ${MODEL_REF}"}, 2, "x " + raw},        // not a shell
		{[]string{"shx", "-c", "x ${MODEL_REF}"}, 2, "x " + raw},        // not a shell
		{[]string{"env", "srv", "-c", "x ${MODEL_REF}"}, 3, "x " + raw}, // env runs no shell here
	} {
		got, err := engine.ExpandAll(tc.argv, vars)
		if err != nil || got[tc.idx] != tc.want {
			t.Errorf("ExpandAll(%q)[%d] = %q, %v; want %q", tc.argv, tc.idx, got, err, tc.want)
		}
	}
}

// A value made of inert characters goes in as it is, in any script; any
// other value is refused where the script's quoting cannot be followed.
func TestExpandAllShellUnsupported(t *testing.T) {
	for _, script := range []string{
		"x `echo ${MODEL_REF}`", "x $'${MODEL_REF}'", "cat <<EOF\n${MODEL_REF}\nEOF", "x \\${MODEL_REF}",
		"eval \"x ${MODEL_REF}\"", "su llm -c 'x ${MODEL_REF}'", "exec sh -c 'x ${MODEL_REF}'",
		"case a in a) x ${MODEL_REF};; esac", "x '${MODEL_REF}", "x \"${MODEL_REF}", "x $(y ${MODEL_REF}", "x ${MODEL_REF})",
		"trap 'x ${MODEL_REF}' EXIT",
	} {
		got, err := engine.ExpandAll([]string{"sh", "-c", script}, map[string]string{"MODEL_REF": "/models/a-1.gguf"})
		if err != nil || !strings.Contains(got[2], "/models/a-1.gguf") {
			t.Errorf("inert value in %q: %q, %v", script, got, err)
		}
		_, err = engine.ExpandAll([]string{"sh", "-c", script}, map[string]string{"MODEL_REF": "$(touch x)"})
		if err == nil || !strings.Contains(err.Error(), "argument 2") || !strings.Contains(err.Error(), "${MODEL_REF}") {
			t.Errorf("hostile value in %q: %v, want an error naming argument 2 and the placeholder", script, err)
		}
	}
	// Here-strings are fine.
	if got, err := engine.ExpandAll([]string{"bash", "-c", "cat <<< ${MODEL_REF}"}, map[string]string{"MODEL_REF": "a b"}); err != nil ||
		got[2] != "cat <<< 'a b'" {
		t.Errorf("here-string: %q, %v", got, err)
	}
	// env -S splits with its own rules: inert values only.
	if _, err := engine.ExpandAll([]string{"env", "-S", "sh -c 'x ${MODEL_REF}'"}, map[string]string{"MODEL_REF": "a b"}); err == nil {
		t.Error("env -S with a non-inert value: no error")
	}
	if got, err := engine.ExpandAll([]string{"env", "-S", "sh -c 'x ${MODEL_REF}'"}, map[string]string{"MODEL_REF": "ab"}); err != nil ||
		!slices.Equal(got, []string{"env", "-S", "sh -c 'x ab'"}) {
		t.Errorf("env -S with an inert value: %q, %v", got, err)
	}
}
