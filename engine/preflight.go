// This file holds the checks that run before an engine is asked to load a
// model: the model file itself (exists, readable, a GGUF header where the
// name says GGUF) and the host's free memory. They are pure and fast (a stat,
// at most 8 bytes read, one read of /proc/meminfo), so a reload can run them
// before it touches the running engine and answer in milliseconds.

package engine

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/pool-managerd/pool-managerd/internal/proc"
)

// GGUFVersions are the GGUF format versions CheckModel accepts.
var GGUFVersions = []uint32{1, 2, 3}

// CheckModel checks a model_ref before an engine loads it. A ref that is not
// an absolute path (a Hugging Face id, a label) is not a file and passes. An
// absolute path must exist and be a regular file or a directory (vLLM and TGI
// load model directories); the daemon must be able to open it. A path ending
// in ".gguf" (any case) must be a regular file whose first 8 bytes are the
// magic "GGUF" and a known version (GGUFVersions, little-endian). The error
// names the path and the problem; a bad header says "invalid magic" like
// llama.cpp does.
func CheckModel(path string) error {
	if !filepath.IsAbs(path) {
		return nil
	}
	fi, err := os.Stat(path) // follows symlinks: the target is what gets loaded
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("model %s: no such file or directory", path)
		}
		return fmt.Errorf("model %s: %w", path, unwrapPath(err))
	}
	isGGUF := strings.HasSuffix(strings.ToLower(path), ".gguf")
	switch {
	case fi.Mode().IsRegular():
	case fi.IsDir() && !isGGUF:
		return nil // a model directory: nothing more to read without loading it
	case fi.IsDir():
		return fmt.Errorf("model %s: is a directory, not a GGUF file", path)
	default:
		// Opening a FIFO would block; a device is no model.
		return fmt.Errorf("model %s: is not a regular file (%s)", path, fi.Mode().Type())
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("model %s: cannot open: %w", path, unwrapPath(err))
	}
	defer f.Close()
	if !isGGUF {
		return nil
	}
	var hdr [8]byte
	n, err := io.ReadFull(f, hdr[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("model %s: cannot read: %w", path, unwrapPath(err))
	}
	return checkGGUFHeader(path, hdr[:n], fi.Size())
}

// checkGGUFHeader checks the first 8 bytes of a GGUF file (fewer when the
// file is shorter).
func checkGGUFHeader(path string, hdr []byte, size int64) error {
	if len(hdr) < 8 {
		return fmt.Errorf("model %s: %d bytes long, too short for a GGUF header (truncated?)", path, size)
	}
	if !bytes.Equal(hdr[:4], []byte("GGUF")) {
		return fmt.Errorf("model %s: not a GGUF file: invalid magic %q, expected \"GGUF\"", path, hdr[:4])
	}
	v := binary.LittleEndian.Uint32(hdr[4:8])
	if slices.Contains(GGUFVersions, v) {
		return nil
	}
	if be := binary.BigEndian.Uint32(hdr[4:8]); slices.Contains(GGUFVersions, be) {
		return fmt.Errorf("model %s: GGUF version %d is stored big-endian; this host needs a little-endian file", path, be)
	}
	return fmt.Errorf("model %s: unknown GGUF version %d (known: 1, 2, 3)", path, v)
}

// CheckReadableBy checks, from mode bits only (ACLs and capabilities are not
// consulted), that the user of cred could read the model at path: read
// permission on the file (or read and search on a model directory) and search
// permission on every directory above it. A nil cred or uid 0 passes. Call it
// after CheckModel, which checks that the path exists.
func CheckReadableBy(path string, cred *syscall.Credential) error {
	if cred == nil || cred.Uid == 0 || !filepath.IsAbs(path) {
		return nil
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fmt.Errorf("model %s: %w", path, unwrapPath(err))
	}
	who := fmt.Sprintf("uid %d", cred.Uid)
	for dir := filepath.Dir(real); ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err != nil {
			return fmt.Errorf("model %s: %w", path, unwrapPath(err))
		}
		if !permits(fi, cred, 1) {
			return fmt.Errorf("model %s: %s may not enter directory %s (mode %s)", path, who, dir, fi.Mode().Perm())
		}
		if dir == "/" || dir == "." {
			break
		}
	}
	fi, err := os.Stat(real)
	if err != nil {
		return fmt.Errorf("model %s: %w", path, unwrapPath(err))
	}
	want := uint32(4)
	if fi.IsDir() {
		want = 5
	}
	if !permits(fi, cred, want) {
		return fmt.Errorf("model %s: not readable by %s (owner %d, group %d, mode %s)", path, who, ownerOf(fi), groupOf(fi), fi.Mode().Perm())
	}
	return nil
}

// permits applies the owner/group/other mode bits to cred, as the kernel
// does without ACLs: the first class that matches decides. want is a mask of
// 4 (read), 2 (write), 1 (execute/search).
func permits(fi fs.FileInfo, cred *syscall.Credential, want uint32) bool {
	perm := uint32(fi.Mode().Perm())
	switch {
	case ownerOf(fi) == cred.Uid:
		return (perm>>6)&want == want
	case groupOf(fi) == cred.Gid || slices.Contains(cred.Groups, groupOf(fi)):
		return (perm>>3)&want == want
	default:
		return perm&want == want
	}
}

func ownerOf(fi fs.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid
	}
	return ^uint32(0)
}

func groupOf(fi fs.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Gid
	}
	return ^uint32(0)
}

// unwrapPath drops the *fs.PathError wrapper, whose text repeats the path the
// caller already names.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// MeminfoPath is where HostRAM reads MemAvailable.
const MeminfoPath = "/proc/meminfo"

// MemAvailableMiB is the kernel's estimate of memory available for new
// processes without swapping (MemAvailable in /proc/meminfo), in MiB.
func MemAvailableMiB() (uint64, error) {
	f, err := os.Open(MeminfoPath)
	if err != nil {
		return 0, fmt.Errorf("host RAM: %w", err)
	}
	defer f.Close()
	return parseMemAvailable(f)
}

func parseMemAvailable(r io.Reader) (uint64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("host RAM: unexpected MemAvailable line %q", sc.Text())
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("host RAM: MemAvailable %q: %w", f[0], err)
		}
		return kb >> 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("host RAM: %w", err)
	}
	return 0, errors.New("host RAM: no MemAvailable line in " + MeminfoPath + " (kernel older than 3.14?)")
}

// CheckHostRAM refuses when the host has less than needMiB available
// (MemAvailable). needMiB 0 checks nothing.
func CheckHostRAM(needMiB uint64) error {
	if needMiB == 0 {
		return nil
	}
	have, err := MemAvailableMiB()
	if err != nil {
		return err
	}
	return compareRAM(have, needMiB)
}

func compareRAM(haveMiB, needMiB uint64) error {
	if haveMiB < needMiB {
		return fmt.Errorf("host RAM: %d MiB available (MemAvailable), pool needs %d MiB (min_free_ram_mib)", haveMiB, needMiB)
	}
	return nil
}

// GroupRSSMiB sums the resident memory of every process in process group
// pgid (from /proc/PID/stat), in MiB: what an engine gives back to the host
// when it stops. Processes that vanish meanwhile are skipped; 0 when none
// is found.
func GroupRSSMiB(pgid int) uint64 {
	if pgid <= 0 {
		return 0
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	page := uint64(os.Getpagesize())
	var pages uint64
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := proc.ReadStat(pid)
		if err == nil && st.PGrp == pgid {
			pages += st.RSSPages
		}
	}
	return pages * page >> 20
}
