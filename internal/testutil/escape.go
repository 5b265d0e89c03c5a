package testutil

import (
	"os"
	"path/filepath"
)

// Escapees is a shell fragment that starts three python children leaving
// the caller's process group every way a real engine's do: setsid(),
// setpgid(0, 0), and a daemonizing double fork (Ray workers under vLLM).
// Each sleeps 1000 s. When $ESCAPE_DIR names a directory, each writes a
// file there (setsid, setpgid, daemon) once it has left the group; see
// EscapeesSettled. Callers append what the engine does next.
const Escapees = `
python3 -c 'import os,time; os.setsid(); os.path.isdir(os.environ.get("ESCAPE_DIR","")) and open(os.environ["ESCAPE_DIR"]+"/setsid","w"); time.sleep(1000)' &
python3 -c 'import os,time; os.setpgid(0,0); os.path.isdir(os.environ.get("ESCAPE_DIR","")) and open(os.environ["ESCAPE_DIR"]+"/setpgid","w"); time.sleep(1000)' &
python3 -c '
import os,time
if os.fork(): os._exit(0)
os.setsid()
if os.fork(): os._exit(0)
os.path.isdir(os.environ.get("ESCAPE_DIR","")) and open(os.environ["ESCAPE_DIR"]+"/daemon","w")
time.sleep(1000)' &
`

// EscapeesSettled reports whether all three children of Escapees have left
// the group and said so in dir: before that, the double fork's short-lived
// middle process can make a count of escaped processes look right.
func EscapeesSettled(dir string) bool {
	for _, name := range []string{"setsid", "setpgid", "daemon"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return false
		}
	}
	return true
}
