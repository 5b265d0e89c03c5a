// A local unprivileged user against a root daemon: the client runs as
// nobody, the daemon as root. Neither the API's auth nor a hostile model
// reference may let nobody run anything as root.

package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// nobody returns the credential of user nobody, or skips the test when
// this process cannot switch to it.
func nobody(t *testing.T) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the daemon runs as root and the client as nobody")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
}

// publicBinary copies this test binary where nobody may run it (go test's
// build directory is 0700).
func publicBinary(t *testing.T) string {
	t.Helper()
	dir := testutil.ShortTempDir(t, "pool-managerd-public-")
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	path := filepath.Join(dir, "pool-managerd.test")
	dst, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// asUser runs `bin ctl --addr ADDR args…` (poolctl) with cred and returns its
// exit code and output.
func asUser(t *testing.T, cred *syscall.Credential, bin, addr string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"ctl", "--addr", addr}, args...)...)
	cmd.Env = daemonEnv()
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(exitLimit):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("poolctl %v did not exit: %s", args, out.String())
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

// shellPoolYAML is a pool whose command is the README's shell form,
// [sh, -c, "exec … ${MODEL_REF} …"].
func shellPoolYAML(id string) string {
	return "  - id: " + id + "\n    engine: llamacpp\n    model_ref: test/" + id + "\n" +
		"    command: [sh, -c, \"exec ${SELF} sim-engine --host ${HOST} --port ${PORT} --model ${MODEL_REF} --load-time 100ms\"]\n"
}

// The finding: `{"new_model_ref": "$(id > /tmp/x)m"}` sent by nobody made
// the root daemon's engine shell write uid=0(root). Now nobody's mutating
// call without the token is 401 UNAUTHORIZED; with the token the reference
// is 400 INVALID_MODEL_REF; nothing runs, the file never appears, and the
// engine is untouched. Reads stay open to nobody.
func TestNobodyCannotRunCommandsThroughReload(t *testing.T) {
	t.Parallel()
	cred := nobody(t)
	bin := publicBinary(t)
	marker := filepath.Join(t.TempDir(), "pwned") // only root could write here
	d := startDaemon(t, "-config", tempConfig(t, configYAML(simHead, shellPoolYAML("a"))))
	before := d.waitPool("a", "ready", func(p poolStatus, _ int) bool { return p.State == "ready" && p.PID != nil })
	addr := strings.TrimPrefix(d.base, "http://")

	rec := d.waitLog("auth.token_generated")
	tokenFile := rec.str("token_file")
	if tokenFile != filepath.Join(d.runDir, "api.token") {
		t.Fatalf("token_file %q, want %s", tokenFile, filepath.Join(d.runDir, "api.token"))
	}
	fi, err := os.Stat(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o600 || st.Uid != 0 {
		t.Fatalf("token file mode %s owner %d, want 0600 root", fi.Mode(), st.Uid)
	}
	token := d.writeToken()

	hostile := "$(id > " + marker + ")m"
	code, out := asUser(t, cred, bin, addr, "reload", "a", "--model", hostile, "--wait")
	if code != 1 || !strings.Contains(out, "UNAUTHORIZED") {
		t.Fatalf("nobody's reload without the token: exit %d\n%s", code, out)
	}
	for _, args := range [][]string{{"drain", "a"}, {"start", "a"}, {"lease", "a"}, {"place"}} {
		if code, out := asUser(t, cred, bin, addr, args...); code != 1 || !strings.Contains(out, "UNAUTHORIZED") {
			t.Errorf("nobody's %v without the token: exit %d\n%s", args, code, out)
		}
	}
	if code, out := asUser(t, cred, bin, addr, "list"); code != 0 || !strings.Contains(out, "a") {
		t.Errorf("nobody's list: exit %d\n%s", code, out)
	}
	// Even holding the token, nobody cannot get the reference executed.
	for _, ref := range []string{hostile, "`id > " + marker + "`", "m;id>" + marker} {
		code, out = asUser(t, cred, bin, addr, "--token", token, "reload", "a", "--model", ref, "--wait")
		if code != 1 || !strings.Contains(out, "INVALID_MODEL_REF") {
			t.Fatalf("nobody's reload %q with the token: exit %d\n%s", ref, code, out)
		}
	}
	after, _, err := d.pool("a")
	if err != nil {
		t.Fatal(err)
	}
	if after.State != "ready" || after.pid() != before.pid() {
		t.Fatalf("pool changed: before %+v, after %+v", before, after)
	}
	if b, err := os.ReadFile(marker); err == nil {
		t.Fatalf("the injected command ran as root: %s wrote %q", marker, b)
	}
	// With the token a clean reference reloads, through the shell.
	if code, out := asUser(t, cred, bin, addr, "--token", token, "reload", "a", "--model", "org/model-2", "--wait"); code != 0 {
		t.Fatalf("nobody's clean reload with the token: exit %d\n%s", code, out)
	}
	d.stop()
	if _, err := os.Stat(tokenFile); err == nil {
		t.Error("the token file outlived the daemon")
	}
}

// A daemon that is not root keeps the old behaviour: no token is generated
// and mutating calls need none.
func TestNonRootDaemonGeneratesNoToken(t *testing.T) {
	t.Parallel()
	cred := nobody(t)
	bin := publicBinary(t)
	dir := testutil.ShortTempDir(t, "pool-managerd-nobody-")
	if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.yaml")
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	writeFile(t, cfg, configYAML(simHead+"listen: "+addr+"\n", simPool("a", nil)))
	if err := os.Chmod(cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, "-config", cfg)
	cmd.Env = daemonEnv("RUNTIME_DIRECTORY=" + dir)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("daemon output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(startLimit)
	for {
		if code, _ := asUser(t, cred, bin, addr, "start", "a"); code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("nobody's daemon never took start a without a token")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(dir, "api.token")); err == nil {
		t.Error("a non-root daemon wrote a token")
	}
}

func TestNeedsWriteToken(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the rule is about root")
	}
	for _, tc := range []struct {
		listen, token string
		want          bool
	}{
		{"127.0.0.1:9200", "", true}, {"[::1]:9200", "", true}, {"127.0.0.1:9200", "configured", false},
		{"unix:/run/pool-managerd/api.sock", "", false},
	} {
		if got := needsWriteToken(&config.Config{Listen: tc.listen}, tc.token); got != tc.want {
			t.Errorf("needsWriteToken(%q, %q) = %t, want %t", tc.listen, tc.token, got, tc.want)
		}
	}
}

// A token directory others may write to is refused: they could swap the
// file between the daemon's write and poolctl's read.
func TestWriteTokenDirMustBeTheDaemons(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := generateWriteToken(dir); err == nil || !strings.Contains(err.Error(), "lets group or others write it") {
		t.Fatalf("world-writable dir: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	wt, err := generateWriteToken(filepath.Join(dir, "sub"))
	if err != nil || len(wt.Token) != 64 {
		t.Fatalf("generateWriteToken: %+v %v", wt, err)
	}
	if b, _ := os.ReadFile(wt.Path); strings.TrimSpace(string(b)) != wt.Token {
		t.Fatalf("file holds %q", b)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "sub"))
	if len(entries) != 1 {
		t.Fatalf("left temporary files: %v", entries)
	}
	wt.remove()
	if _, err := os.Stat(wt.Path); !os.IsNotExist(err) {
		t.Fatalf("token file after remove: %v", err)
	}
}

// A second daemon that would write its token to the same directory is
// refused while the first runs (it would replace the first one's token,
// and poolctl would then send the first daemon the wrong one); once the
// first is gone, the directory is free again.
func TestWriteTokenOneDaemonPerDirectory(t *testing.T) {
	dir := t.TempDir()
	first, err := generateWriteToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := generateWriteToken(dir); err == nil || !strings.Contains(err.Error(), "another pool-managerd running on this host") {
		t.Fatalf("second daemon on the same directory: %v, want a refusal", err)
	}
	if b, _ := os.ReadFile(first.Path); strings.TrimSpace(string(b)) != first.Token {
		t.Fatalf("the refused daemon touched the first one's token: %q", b)
	}
	first.remove()
	second, err := generateWriteToken(dir)
	if err != nil {
		t.Fatalf("after the first daemon left: %v", err)
	}
	second.remove()
}
