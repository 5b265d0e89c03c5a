package engine

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

func writeFile(t *testing.T, dir, name string, data []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return p
}

func TestCheckModel(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.gguf", append([]byte("GGUF\x03\x00\x00\x00"), make([]byte, 32)...), 0o644)
	v1 := writeFile(t, dir, "v1.GGUF", []byte("GGUF\x01\x00\x00\x00"), 0o644)
	corrupt := writeFile(t, dir, "corrupt.gguf", []byte("this is not a model at all"), 0o644)
	short := writeFile(t, dir, "short.gguf", []byte("GGU"), 0o644)
	empty := writeFile(t, dir, "empty.gguf", nil, 0o644)
	v9 := writeFile(t, dir, "v9.gguf", []byte("GGUF\x09\x00\x00\x00"), 0o644)
	bigEndian := writeFile(t, dir, "be.gguf", []byte("GGUF\x00\x00\x00\x03"), 0o644)
	safetensors := writeFile(t, dir, "model.safetensors", []byte("whatever"), 0o644)
	modelDir := filepath.Join(dir, "hf-model")
	if err := os.Mkdir(modelDir, 0o755); err != nil {
		t.Fatal(err)
	}
	ggufDir := filepath.Join(dir, "dir.gguf")
	if err := os.Mkdir(ggufDir, 0o755); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.gguf")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.gguf")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(dir, "dangling.gguf")
	if err := os.Symlink(filepath.Join(dir, "nowhere"), dangling); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		path string
		want string // "" = accepted; else a substring of the error
	}{
		{good, ""},
		{v1, ""},
		{link, ""},
		{safetensors, ""},
		{modelDir, ""},
		{"meta-llama/Llama-3-8B", ""}, // not a path: passed through
		{"relative/model.gguf", ""},
		{filepath.Join(dir, "missing.gguf"), "missing.gguf: no such file or directory"},
		{dangling, "no such file or directory"},
		{corrupt, `not a GGUF file: invalid magic "this", expected "GGUF"`},
		{short, "3 bytes long, too short for a GGUF header"},
		{empty, "0 bytes long, too short"},
		{v9, "unknown GGUF version 9"},
		{bigEndian, "big-endian"},
		{ggufDir, "is a directory, not a GGUF file"},
		{fifo, "is not a regular file"},
	} {
		err := CheckModel(tc.path)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("CheckModel(%s) = %v, want nil", tc.path, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("CheckModel(%s) = %v, want an error containing %q", tc.path, err, tc.want)
		case tc.want != "" && !strings.Contains(err.Error(), tc.path):
			t.Errorf("CheckModel(%s) = %v: the error should name the path", tc.path, err)
		}
	}
}

// The daemon (root) can read anything; the pool's user may not.
func TestCheckModelUnreadableAsRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root opens any file; CheckReadableBy covers the pool's user")
	}
	p := writeFile(t, t.TempDir(), "m.gguf", []byte("GGUF\x03\x00\x00\x00"), 0o000)
	if err := CheckModel(p); err == nil || !strings.Contains(err.Error(), "cannot open: permission denied") {
		t.Fatalf("CheckModel = %v", err)
	}
}

func nobody(t *testing.T) *syscall.Credential {
	t.Helper()
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody")
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

func TestCheckReadableBy(t *testing.T) {
	cred := nobody(t)
	dir := testutil.ShortTempDir(t, "preflight-") // t.TempDir's parent is 0700
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	hdr := []byte("GGUF\x03\x00\x00\x00")
	open := writeFile(t, dir, "open.gguf", hdr, 0o644)
	private := writeFile(t, dir, "private.gguf", hdr, 0o600)
	closed := filepath.Join(dir, "closed")
	if err := os.Mkdir(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	inClosed := writeFile(t, closed, "m.gguf", hdr, 0o644)

	if err := CheckReadableBy(open, cred); err != nil {
		t.Errorf("world-readable file: %v", err)
	}
	if err := CheckReadableBy(private, nil); err != nil {
		t.Errorf("nil credential (the daemon's own user): %v", err)
	}
	if err := CheckReadableBy(private, &syscall.Credential{Uid: 0}); err != nil {
		t.Errorf("uid 0: %v", err)
	}
	if uint32(os.Geteuid()) != cred.Uid { // the files belong to the test's user
		if err := CheckReadableBy(private, cred); err == nil || !strings.Contains(err.Error(), "not readable by uid "+strconv.Itoa(int(cred.Uid))) || !strings.Contains(err.Error(), "-rw-------") {
			t.Errorf("mode 0600 of another user: %v", err)
		}
		if err := CheckReadableBy(inClosed, cred); err == nil || !strings.Contains(err.Error(), "may not enter directory "+closed) {
			t.Errorf("file in a 0700 directory of another user: %v", err)
		}
	}
	// The group class decides for a member of the file's group.
	if err := os.Chmod(private, 0o640); err != nil {
		t.Fatal(err)
	}
	member := &syscall.Credential{Uid: cred.Uid, Gid: cred.Gid, Groups: []uint32{groupOf(mustStat(t, private))}}
	if err := CheckReadableBy(private, member); err != nil {
		t.Errorf("group-readable file, user in the group: %v", err)
	}
}

func mustStat(t *testing.T, p string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

func TestParseMemAvailable(t *testing.T) {
	const meminfo = "MemTotal:       16318412 kB\nMemFree:          523412 kB\nMemAvailable:    8388608 kB\nBuffers:  1 kB\n"
	got, err := parseMemAvailable(strings.NewReader(meminfo))
	if err != nil || got != 8192 {
		t.Fatalf("parseMemAvailable = %d, %v; want 8192 MiB", got, err)
	}
	if _, err := parseMemAvailable(strings.NewReader("MemTotal: 1 kB\n")); err == nil || !strings.Contains(err.Error(), "no MemAvailable line") {
		t.Fatalf("without MemAvailable: %v", err)
	}
	if _, err := parseMemAvailable(strings.NewReader("MemAvailable: lots\n")); err == nil || !strings.Contains(err.Error(), "unexpected MemAvailable line") {
		t.Fatalf("garbled: %v", err)
	}
}

func TestCheckHostRAM(t *testing.T) {
	have, err := MemAvailableMiB()
	if err != nil {
		t.Fatal(err)
	}
	if have == 0 {
		t.Fatal("MemAvailable read as 0 MiB")
	}
	if err := CheckHostRAM(0); err != nil {
		t.Errorf("need 0: %v", err)
	}
	if err := CheckHostRAM(1); err != nil {
		t.Errorf("need 1 MiB: %v", err)
	}
	err = CheckHostRAM(1 << 40)
	if err == nil || !strings.Contains(err.Error(), "MiB available (MemAvailable), pool needs 1099511627776 MiB (min_free_ram_mib)") {
		t.Errorf("need 1 EiB: %v", err)
	}
	if err := compareRAM(100, 200); err == nil || err.Error() != "host RAM: 100 MiB available (MemAvailable), pool needs 200 MiB (min_free_ram_mib)" {
		t.Errorf("compareRAM = %v", err)
	}
}

func TestGroupRSS(t *testing.T) {
	// The parser (hostile command names, malformed lines) is tested in internal/proc.
	// This test process's own group holds at least its own resident memory.
	if got := GroupRSSMiB(syscall.Getpgrp()); got == 0 {
		t.Fatalf("GroupRSSMiB(own group) = 0")
	}
	if got := GroupRSSMiB(0); got != 0 {
		t.Fatalf("GroupRSSMiB(0) = %d", got)
	}
}
