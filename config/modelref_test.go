package config

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckModelRef(t *testing.T) {
	open := Pool{ID: "p"}
	for _, ref := range []string{
		"/models/llama-3.1-8b-instruct-q4_k_m.gguf", "TheBloke/Llama-2-7B-GGUF", "mistralai/Mistral-7B-Instruct-v0.3",
		"llama3:8b", "org/model@rev", "a+b=c,d%20", "m", "./rel/model", strings.Repeat("a", MaxModelRefLen),
	} {
		if err := CheckModelRef(open, ref); err != nil {
			t.Errorf("CheckModelRef(%q) = %v, want nil", ref, err)
		}
	}
	for _, tc := range []struct{ ref, msg string }{
		{"", "must not be empty"},
		{strings.Repeat("a", MaxModelRefLen+1), "at most 1024"},
		{"-rf", `starts with "-"`},
		{"--model=/etc/shadow", `starts with "-"`},
		{"/models/../etc/passwd", `".." path component`},
		{"..", `".." path component`},
		{"a/..", `".." path component`},
		{"$(id > /tmp/x)m", "'$' (a shell metacharacter) at byte 0"},
		{"m`id`", "'`' (a shell metacharacter)"},
		{"m;id", "';' (a shell metacharacter)"},
		{"m|id", "'|'"}, {"m&id", "'&'"}, {"m<x", "'<'"}, {"m>x", "'>'"}, {"m(x", "'('"}, {"m)x", "')'"},
		{"m{x", "'{'"}, {"m}x", "'}'"}, {"m*", "'*'"}, {"m?", "'?'"}, {"m!", "'!'"}, {"~/m", "'~'"},
		{"m'x", `'\''`}, {`m"x`, `'"'`}, {`m\x`, `'\\'`}, {"m[0]", "'['"}, {"m#x", "'#'"},
		{"a b", "' ' (a space)"},
		{"a\tb", "U+0009 (a control character)"},
		{"a\nb", "U+000A (a control character)"},
		{"a\x00b", "U+0000"},
		{"modèle", "not ASCII"},
	} {
		err := CheckModelRef(open, tc.ref)
		if err == nil || !errors.Is(err, ErrModelRefInvalid) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("CheckModelRef(%q) = %v, want ErrModelRefInvalid containing %q", tc.ref, err, tc.msg)
		}
	}
}

func TestReloadAllowed(t *testing.T) {
	p := Pool{ID: "p", ReloadAllowed: []string{"/models/", "/srv/llm", "TheBloke/", "exact-model"}}
	for _, ref := range []string{"/models/a.gguf", "/models//a.gguf", "/models/./x/a.gguf", "/srv/llm", "/srv/llm/b",
		"TheBloke/Llama-2-7B-GGUF", "exact-model", "exact-model-v2"} {
		if err := CheckModelRef(p, ref); err != nil {
			t.Errorf("%q: %v, want allowed", ref, err)
		}
	}
	for _, ref := range []string{"/models-old/a.gguf", "/srv/llmx", "/etc/passwd", "models/a.gguf", "thebloke/x", "Other/x", "/TheBloke/x"} {
		err := CheckModelRef(p, ref)
		if !errors.Is(err, ErrModelRefNotAllowed) || !strings.Contains(err.Error(), "reload_allowed") {
			t.Errorf("%q: %v, want ErrModelRefNotAllowed", ref, err)
		}
	}
	// Syntax comes first: a bad reference is invalid, whatever the list says.
	if err := CheckModelRef(p, "/models/../etc/passwd"); !errors.Is(err, ErrModelRefInvalid) {
		t.Errorf("traversal under an allowed root: %v, want ErrModelRefInvalid", err)
	}
	if !AllowsModelRef([]string{"/"}, "/anything/at/all") {
		t.Error("root entry must allow every absolute path")
	}
}

func TestReloadAllowedParsed(t *testing.T) {
	c, err := Parse([]byte(poolYAML(`reload_allowed: [/models/, "TheBloke/"]`)), "f.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Pools[0].ReloadAllowed; len(got) != 2 || got[0] != "/models/" || got[1] != "TheBloke/" {
		t.Fatalf("ReloadAllowed = %q", got)
	}
	// A model_ref with a space is the author's business (the daemon quotes
	// it inside sh -c scripts): no problem.
	if _, err := Parse([]byte(strings.Replace(poolYAML("slots: 1"), "model_ref: m", `model_ref: "/models/My Model.gguf"`, 1)), "f.yaml"); err != nil {
		t.Fatalf("model_ref with a space: %v", err)
	}
}

// FuzzCheckModelRef: whatever CheckModelRef accepts is inert in a shell
// (every byte is a letter, digit or SafeModelRefChars), bounded, never an
// option and never climbs a directory; whatever it refuses wraps one of
// its two errors.
//
//	go test -run='^$' -fuzz='^FuzzCheckModelRef$' -fuzztime=20s ./config
func FuzzCheckModelRef(f *testing.F) {
	for _, s := range []string{"/models/a.gguf", "TheBloke/x", "$(id)", "a/../b", "-x", "a b", "m`x`", "/models-x/y", ""} {
		f.Add(s)
	}
	pool := Pool{ID: "p", ReloadAllowed: []string{"/models/", "TheBloke/"}}
	f.Fuzz(func(t *testing.T, ref string) {
		err := CheckModelRef(Pool{ID: "p"}, ref)
		if err != nil {
			if !errors.Is(err, ErrModelRefInvalid) {
				t.Fatalf("%q: %v does not wrap ErrModelRefInvalid", ref, err)
			}
			return
		}
		if ref == "" || len(ref) > MaxModelRefLen || ref[0] == '-' {
			t.Fatalf("%q accepted", ref)
		}
		for i := 0; i < len(ref); i++ {
			if !IsSafeModelRefChar(ref[i]) || strings.IndexByte(shellSpecial, ref[i]) >= 0 {
				t.Fatalf("%q accepted with byte %q", ref, ref[i])
			}
		}
		for _, part := range strings.Split(ref, "/") {
			if part == ".." {
				t.Fatalf("%q accepted with a .. component", ref)
			}
		}
		if err := CheckModelRef(pool, ref); err != nil && !errors.Is(err, ErrModelRefNotAllowed) {
			t.Fatalf("%q with reload_allowed: %v", ref, err)
		}
	})
}
