package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// -check-config reports what the daemon itself would refuse at start, not
// only what the config parser finds: a non-loopback listen without a token,
// an unreadable or empty token file, a pool user it cannot apply.
func TestCheckConfigReportsStartRefusals(t *testing.T) {
	t.Setenv("POOL_MANAGERD_TOKEN", "")
	t.Setenv("POOL_MANAGERD_ADDR", "")
	dir := t.TempDir()
	check := func(t *testing.T, file string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := run([]string{"-check-config", file}, &out, &errb)
		return code, out.String(), errb.String()
	}
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pool := func(id string, extra ...string) string { return simPool(id, nil, extra...) }

	t.Run("all at once", func(t *testing.T) {
		f := write("bad.yaml", configYAML("listen: 0.0.0.0:9200\n"+simHead,
			pool("ok"), pool("ghost", "user: no-such-user-pool-managerd")))
		code, stdout, stderr := check(t, f)
		if code != 2 {
			t.Fatalf("exit %d, want 2\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if len(lines) != 2 {
			t.Fatalf("want 2 problem lines, got %d:\n%s", len(lines), stderr)
		}
		if !strings.HasPrefix(lines[0], f+": ") || !strings.Contains(lines[0], "non-loopback 0.0.0.0:9200") ||
			!strings.Contains(lines[0], "token") {
			t.Errorf("listen problem: %q", lines[0])
		}
		// The pool and the user (and the user again in the hint), with the pool's line.
		want := `pool ghost: user "no-such-user-pool-managerd": unknown user (create it: useradd --system --no-create-home --shell /usr/sbin/nologin no-such-user-pool-managerd)`
		if !strings.HasPrefix(lines[1], f+":") || !strings.HasSuffix(lines[1], ": "+want) || strings.Count(lines[1], "no-such-user") != 2 {
			t.Errorf("user problem: %q, want %q with the file and line in front", lines[1], want)
		}
	})

	t.Run("token file", func(t *testing.T) {
		empty := write("empty-token", "\n")
		for name, tf := range map[string]string{"missing": filepath.Join(dir, "nope"), "empty": empty} {
			f := write(name+".yaml", configYAML("auth: {token_file: "+tf+"}\n"+simHead, pool("one")))
			code, _, stderr := check(t, f)
			if code != 2 || !strings.Contains(stderr, "auth.token_file") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Errorf("%s token file: exit %d, stderr %q; want 2 and one auth.token_file line", name, code, stderr)
			}
		}
		// The environment's token wins: the file is never read, nothing to refuse.
		t.Setenv("POOL_MANAGERD_TOKEN", "t")
		f := write("env.yaml", configYAML("listen: 0.0.0.0:9200\nauth: {token_file: "+filepath.Join(dir, "nope")+"}\n"+simHead, pool("one")))
		if code, _, stderr := check(t, f); code != 0 {
			t.Errorf("with POOL_MANAGERD_TOKEN: exit %d, stderr %q, want 0", code, stderr)
		}
		t.Setenv("POOL_MANAGERD_TOKEN", "")
		good := write("token", "s3cret\n")
		f = write("file.yaml", configYAML("listen: 0.0.0.0:9200\nauth: {token_file: "+good+"}\n"+simHead, pool("one")))
		if code, stdout, stderr := check(t, f); code != 0 || !strings.Contains(stdout, ": ok") {
			t.Errorf("non-loopback with a token file: exit %d, stdout %q, stderr %q, want 0", code, stdout, stderr)
		}
	})

	t.Run("POOL_MANAGERD_ADDR", func(t *testing.T) {
		f := write("loop.yaml", configYAML(simHead, pool("one")))
		t.Setenv("POOL_MANAGERD_ADDR", "0.0.0.0:9200")
		if code, _, stderr := check(t, f); code != 2 || !strings.Contains(stderr, "non-loopback 0.0.0.0:9200") {
			t.Errorf("exit %d, stderr %q; want 2 naming the environment's address", code, stderr)
		}
	})
}

// A second SIGTERM during the shutdown hurries it: the drains stop waiting
// for leases.
func TestSecondSignalHurriesShutdown(t *testing.T) {
	t.Parallel()
	cfg := tempConfig(t, configYAML("shutdown_deadline: 60s\ngpu: {require_nvidia: false}\n", simPool("held", nil)))
	d := startDaemon(t, "-config", cfg)
	pid := d.waitPools("held ready", allReady("held"))[0].pid()
	if code, err := d.do("POST", "/v1/pools/held/leases", "{}", nil); err != nil || code != 201 {
		t.Fatalf("POST leases = HTTP %d (%v), want 201", code, err)
	}
	d.signal(syscall.SIGTERM)
	d.waitLog("drain.started", "pool_id", "held", "reason", "shutdown")
	// The wait for the lease is not silent: it says who waits and what hurries it.
	w := d.waitLog("daemon.shutdown_waiting")
	if !strings.Contains(w.str("pools"), "held: draining, 1 lease(s)") || !strings.Contains(w.str("detail"), "second SIGINT") {
		t.Errorf("daemon.shutdown_waiting %s: want the draining pool with its lease and the hurry hint", w.Raw)
	}
	d.signal(syscall.SIGTERM)
	code, took := d.waitExit(exitLimit) // 60 s without the hurry
	if code != 0 {
		t.Fatalf("exit code = %d, want 0", code)
	}
	if took > 10*time.Second {
		t.Errorf("hurried shutdown took %s", took)
	}
	if !gone(pid) {
		t.Errorf("engine %d outlived the daemon", pid)
	}
	recs := d.records()
	doc := parseLogDoc(t)
	for _, msg := range []string{"daemon.signal_during_shutdown", "daemon.hurry", "daemon.shutdown_waiting"} {
		m := find(recs, msg)
		if len(m) != 1 {
			t.Errorf("%d %q records, want 1", len(m), msg)
			continue
		}
		checkRecord(t, doc, m[0])
	}
	if len(find(recs, "drain.finished", "pool_id", "held", "forced", true, "final_leases", 1)) != 1 {
		t.Error("no forced drain.finished with final_leases 1")
	}
}

// A valid config that cannot run here gets warnings with their lines, and
// still exits 0: a missing program, a missing absolute model, NVML that
// cannot be loaded while require_nvidia is on, an unwritable state_dir.
func TestCheckConfigWarnsAboutThisHost(t *testing.T) {
	t.Setenv("POOL_MANAGERD_TOKEN", "")
	t.Setenv("POOL_MANAGERD_ADDR", "")
	defer func(f func() error) { nvmlLoadable = f }(nvmlLoadable)
	nvmlLoadable = func() error { return errors.New("NVML init: ERROR_LIBRARY_NOT_FOUND (no NVIDIA driver)") }
	dir := t.TempDir()
	notDir := filepath.Join(dir, "not-a-dir")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "host.yaml")
	writeFile(t, f, `shutdown_deadline: 5s
state_dir: `+notDir+`
pools:
  - id: noprog
    engine: llamacpp
    model_ref: m
    command: [/nonexistent/llama-server, --port, "${PORT}"]
  - id: nomodel
    engine: llamacpp
    model_ref: /nonexistent/model.gguf
    command: [sh, -c, "exec sleep 1 ${PORT}"]
`)
	check := func() (int, string, string) {
		var out, errb bytes.Buffer
		code := run([]string{"-check-config", f}, &out, &errb)
		return code, out.String(), errb.String()
	}
	code, stdout, stderr := check()
	if code != 0 {
		t.Fatalf("exit %d, want 0 (warnings only)\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	for _, want := range []string{
		f + ":4: warning: pool noprog: command: /nonexistent/llama-server: no such file or directory",
		f + ":8: warning: pool nomodel: model_ref /nonexistent/model.gguf does not exist here",
		"warning: gpu.require_nvidia is true but NVML init: ERROR_LIBRARY_NOT_FOUND",
		f + ":2: warning: state_dir " + notDir + ": exists and is not a directory",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if !strings.Contains(stdout, "ok, with") {
		t.Errorf("stdout %q: want an ok line that counts the warnings", stdout)
	}
}

// A config with start refusals gets its host warnings too, in the same run
// (exit 2 still), and a missing auth.token_file names its line: a newcomer
// learns at once everything a fresh machine lacks.
func TestCheckConfigErrorsAndWarningsTogether(t *testing.T) {
	t.Setenv("POOL_MANAGERD_TOKEN", "")
	t.Setenv("POOL_MANAGERD_ADDR", "")
	dir := t.TempDir()
	f := filepath.Join(dir, "both.yaml")
	writeFile(t, f, `shutdown_deadline: 5s
auth:
  token_file: `+filepath.Join(dir, "no-token")+`
gpu: {require_nvidia: false}
pools:
  - id: noprog
    engine: llamacpp
    model_ref: m
    command: [/nonexistent/llama-server, --port, "${PORT}"]
`)
	var out, errb bytes.Buffer
	code := run([]string{"-check-config", f}, &out, &errb)
	stderr := errb.String()
	if code != 2 {
		t.Fatalf("exit %d, want 2\nstdout: %s\nstderr: %s", code, out.String(), stderr)
	}
	for _, want := range []string{
		f + ":3: auth.token_file: open " + filepath.Join(dir, "no-token") + ": no such file or directory (create it:",
		f + ":6: warning: pool noprog: command: /nonexistent/llama-server: no such file or directory",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(out.String(), "ok") {
		t.Errorf("stdout %q: no ok line when the start would be refused", out.String())
	}
}

// auth.token_file on a named pipe (or /dev/zero) is refused at once: the
// start must not wait forever for a writer, or read without end.
func TestTokenFileMustBeRegular(t *testing.T) {
	t.Setenv("POOL_MANAGERD_TOKEN", "")
	t.Setenv("POOL_MANAGERD_ADDR", "")
	dir := t.TempDir()
	fifo := filepath.Join(dir, "token.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tf := range []string{fifo, "/dev/zero"} {
		f := filepath.Join(dir, "c.yaml")
		writeFile(t, f, configYAML("auth: {token_file: "+tf+"}\n"+simHead, simPool("one", nil)))
		done := make(chan struct{})
		var code int
		var errb bytes.Buffer
		go func() {
			defer close(done)
			code = run([]string{"-check-config", f}, &bytes.Buffer{}, &errb)
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("-check-config with token_file %s hangs", tf)
		}
		if code != 2 || !strings.Contains(errb.String(), "not a regular file") {
			t.Errorf("token_file %s: exit %d, stderr %q; want 2 and 'not a regular file'", tf, code, errb.String())
		}
	}
}
