package engine_test

import (
	"encoding/json"
	"net"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/engine"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"PORT": "8080", "HOST": "127.0.0.1", "MODEL_REF": "/m/x.gguf", "POOL_ID": "p1", "EMPTY": ""}
	for _, tc := range []struct {
		in, want, err string
	}{
		{"${PORT}", "8080", ""},
		{"--port=${PORT}", "--port=8080", ""},
		{"exec server --host ${HOST} --port ${PORT} -m ${MODEL_REF}", "exec server --host 127.0.0.1 --port 8080 -m /m/x.gguf", ""},
		{"${POOL_ID}${PORT}", "p18080", ""},
		{"a${EMPTY}b", "ab", ""},
		{"plain", "plain", ""},
		{"", "", ""},
		{"$", "$", ""},
		{"cost $5 and $PORT", "cost $5 and $PORT", ""},
		{"$${PORT}", "$8080", ""},
		{"{PORT}", "{PORT}", ""},
		{"${NOPE}", "", "unknown placeholder ${NOPE}"},
		{"x ${PORT} ${NOPE}", "", "unknown placeholder ${NOPE}"},
		{"${PORT", "", "unterminated"},
		{"${", "", "unterminated"},
		{"${}", "", "empty placeholder"},
		{"${port}", "", "unknown placeholder ${port}"},
	} {
		got, err := engine.Expand(tc.in, vars)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("Expand(%q) error = %v, want one containing %q", tc.in, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("Expand(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestExpandAll(t *testing.T) {
	vars := map[string]string{"PORT": "9", "MODEL_REF": "/m"}
	got, err := engine.ExpandAll([]string{"sh", "-c", "exec srv --port ${PORT}", "${MODEL_REF}"}, vars)
	if want := []string{"sh", "-c", "exec srv --port 9", "/m"}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("ExpandAll = %q, %v; want %q", got, err, want)
	}
	_, err = engine.ExpandAll([]string{"srv", "--port", "${PORTT}"}, vars)
	if err == nil || !strings.Contains(err.Error(), "argument 2") || !strings.Contains(err.Error(), "PORTT") {
		t.Fatalf("ExpandAll error = %v, want one naming argument 2 and PORTT", err)
	}
}

func TestCleanEnv(t *testing.T) {
	base := []string{
		"PATH=/usr/bin", "NOTIFY_SOCKET=/run/systemd/notify", "WATCHDOG_USEC=30000000",
		"WATCHDOG_PID=1", "LISTEN_FDS=2", "LISTEN_PID=1", "LISTEN_FDNAMES=api", "JOURNAL_STREAM=8:123",
		"HOME=/root", "A=1", "A=2", "malformed", "=x", "CUDA_VISIBLE_DEVICES=0",
		"POOL_MANAGERD_TOKEN=s3cret", "POOL_MANAGERD_ADDR=127.0.0.1:9200",
	}
	got := engine.CleanEnv(base, map[string]string{"CUDA_VISIBLE_DEVICES": "GPU-abc", "PORT": "8080"})
	// The API token never reaches an engine; the (harmless) address does.
	want := []string{"A=2", "CUDA_VISIBLE_DEVICES=GPU-abc", "HOME=/root", "PATH=/usr/bin",
		"POOL_MANAGERD_ADDR=127.0.0.1:9200", "PORT=8080"}
	if !slices.Equal(got, want) {
		t.Fatalf("CleanEnv = %q, want %q", got, want)
	}
	if got := engine.CleanEnv(nil, nil); len(got) != 0 {
		t.Fatalf("CleanEnv(nil, nil) = %q", got)
	}
}

func TestFreePort(t *testing.T) {
	port, err := engine.FreePort("127.0.0.1")
	if err != nil || port <= 0 {
		t.Fatalf("FreePort = %d, %v", port, err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("port %d from FreePort not bindable: %v", port, err)
	}
	l.Close()
	if _, err := engine.FreePort("203.0.113.7"); err == nil {
		t.Error("FreePort on an address we do not own: no error")
	}
}

func TestLookupCredential(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if c, err := engine.LookupCredential(me.Username); c != nil || err != nil {
		t.Errorf("LookupCredential(current user) = %+v, %v; want nil, nil", c, err)
	}
	// The error does not name the user: callers put `user "NAME": ` in front.
	if _, err := engine.LookupCredential("no-such-user-pool-managerd"); err == nil || err.Error() != "unknown user" {
		t.Errorf("LookupCredential(unknown user) = %v, want \"unknown user\"", err)
	}
	nobody, err := user.Lookup("nobody")
	if err != nil || nobody.Uid == me.Uid {
		return // no second user to switch to on this machine
	}
	c, err := engine.LookupCredential("nobody")
	if os.Geteuid() != 0 {
		if err == nil || strings.Contains(err.Error(), "nobody") {
			t.Fatalf("LookupCredential(nobody) as non-root = %v, want an error that does not repeat the name", err)
		}
		return
	}
	if err != nil || c == nil || strconv.Itoa(int(c.Uid)) != nobody.Uid || strconv.Itoa(int(c.Gid)) != nobody.Gid {
		t.Fatalf("LookupCredential(nobody) = %+v, %v; want uid %s gid %s", c, err, nobody.Uid, nobody.Gid)
	}
}

func TestExitString(t *testing.T) {
	for _, tc := range []struct {
		e    engine.Exit
		want string
	}{
		{engine.Exit{Code: 0}, "exit code 0"},
		{engine.Exit{Code: 3}, "exit code 3"},
		{engine.Exit{Code: -1, Signal: "SIGKILL"}, "killed by SIGKILL"},
	} {
		if got := tc.e.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.e, got, tc.want)
		}
	}
	for sig, want := range map[syscall.Signal]string{
		syscall.SIGKILL: "SIGKILL", syscall.SIGSEGV: "SIGSEGV", syscall.SIGABRT: "SIGABRT",
		syscall.SIGTERM: "SIGTERM", syscall.Signal(35): "SIGRTMIN+1", syscall.Signal(99): "SIG99",
	} {
		if got := engine.SignalName(sig); got != want {
			t.Errorf("SignalName(%d) = %q, want %q", sig, got, want)
		}
	}
}

func TestLineJSON(t *testing.T) {
	at := time.UnixMilli(1700000000123)
	b, err := json.Marshal(engine.Line{At: at, Stream: "stderr", Text: "oops \"quoted\""})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"at_ms":1700000000123,"stream":"stderr","text":"oops \"quoted\""}`; string(b) != want {
		t.Fatalf("Line JSON = %s, want %s", b, want)
	}
	var back engine.Line
	if err := json.Unmarshal(b, &back); err != nil || !back.At.Equal(at) || back.Text != `oops "quoted"` {
		t.Fatalf("round trip = %+v, %v", back, err)
	}
}
