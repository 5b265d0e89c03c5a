package ctl

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// drainPoll is how often `drain --wait` looks at the pool: a drain takes
// seconds at least, and a GET is cheap for the daemon.
const drainPoll = 250 * time.Millisecond

// now is the clock of UPTIME; tests replace it.
var now = time.Now

// lastErrorWidth keeps `list` rows on one terminal line.
const lastErrorWidth = 48

// pool is the part of PoolStatus (docs/contract.md §4) that poolctl renders itself.
type pool struct {
	PoolID        string  `json:"pool_id"`
	State         string  `json:"state"`
	Live          bool    `json:"live"`
	Ready         bool    `json:"ready"`
	Engine        string  `json:"engine"`
	EngineVersion string  `json:"engine_version"`
	ModelRef      string  `json:"model_ref"`
	PID           *int    `json:"pid"`
	StartedAtMS   *int64  `json:"started_at_ms"`
	ActiveLeases  int     `json:"active_leases"`
	Slots         int     `json:"slots"`
	RestartCount  int     `json:"restart_count"` // restarts after failures
	Starts        int     `json:"starts"`        // every engine spawn
	LastError     *string `json:"last_error"`
	LastDrain     *struct {
		Forced      bool  `json:"forced"`
		DurationMS  int64 `json:"duration_ms"`
		FinalLeases int   `json:"final_leases"`
	} `json:"last_drain"`
}

// msFlag is an optional duration sent as milliseconds; unset, the field is
// left out of the body so the daemon applies its configured default.
type msFlag struct{ ms *int64 }

func (f *msFlag) String() string {
	if f.ms == nil {
		return ""
	}
	return (time.Duration(*f.ms) * time.Millisecond).String()
}

func (f *msFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a duration such as 30s or 2m")
	}
	if d < 0 {
		return errors.New("must not be negative")
	}
	ms := d.Milliseconds()
	f.ms = &ms
	return nil
}

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func poolPath(id string, rest ...string) string {
	p := "/v1/pools/" + url.PathEscape(id)
	for _, r := range rest {
		p += "/" + url.PathEscape(r)
	}
	return p
}

func (c *cli) flags() *flag.FlagSet { return flag.NewFlagSet(c.cmd.name, flag.ContinueOnError) }

// get fetches path and prints it as JSON (--json) or key/value lines.
func (c *cli) get(args []string, sub string) error {
	pos, err := c.parse(c.flags(), args, 1)
	if err != nil {
		return err
	}
	return c.simple("GET", poolPath(pos[0])+sub, nil, c.kv)
}

// simple sends one request and prints its answer with human unless --json.
func (c *cli) simple(method, path string, in any, human func([]byte) error) error {
	cl, err := c.connect()
	if err != nil {
		return err
	}
	body, _, err := cl.call(c.ctx, method, path, in, false)
	if err != nil {
		return err
	}
	if c.g.json {
		printJSON(c.stdout, body)
		return nil
	}
	return human(body)
}

func runShow(c *cli, args []string) error   { return c.get(args, "") }
func runHealth(c *cli, args []string) error { return c.get(args, "/health") }

func runList(c *cli, args []string) error {
	if _, err := c.parse(c.flags(), args, 0); err != nil {
		return err
	}
	return c.simple("GET", "/v1/pools", nil, func(body []byte) error {
		var ans struct{ Pools []pool }
		if err := json.Unmarshal(body, &ans); err != nil {
			return fmt.Errorf("decoding answer: %w", err)
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATE\tREADY\tLIVE\tENGINE\tVERSION\tMODEL\tPID\tUPTIME\tLEASES\tRESTARTS\tSTARTS\tLAST ERROR")
		unlimited := false
		for _, p := range ans.Pools { // the daemon sorts by id
			pid, uptime, slots, lastErr := "-", "-", "-", "-"
			if p.PID != nil {
				pid = strconv.Itoa(*p.PID)
				if p.StartedAtMS != nil {
					uptime = fmtUptime(now().Sub(time.UnixMilli(*p.StartedAtMS)))
				}
			}
			if p.Slots > 0 {
				slots = strconv.Itoa(p.Slots)
			} else {
				unlimited = true
			}
			if p.LastError != nil && *p.LastError != "" {
				lastErr = truncate(*p.LastError, lastErrorWidth)
			}
			fmt.Fprintf(tw, "%s\t%s\t%t\t%t\t%s\t%s\t%s\t%s\t%s\t%d/%s\t%d\t%d\t%s\n", p.PoolID, p.State, p.Ready, p.Live,
				orDash(p.Engine), orDash(p.EngineVersion), orDash(p.ModelRef), pid, uptime, p.ActiveLeases, slots, p.RestartCount, p.Starts, lastErr)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if unlimited {
			fmt.Fprintln(c.stdout, "LEASES is active/slots; - = no slot limit (the pool sets no slots:)")
		}
		return nil
	})
}

func runDrain(c *cli, args []string) error {
	fs := c.flags()
	var deadline msFlag
	fs.Var(&deadline, "deadline", "how long leases may finish before the engine is stopped (default: the pool's drain_deadline)")
	wait := fs.Bool("wait", false, "wait until the pool has stopped and print how the drain went")
	pos, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	cl, err := c.connect()
	if err != nil {
		return err
	}
	in := struct {
		DeadlineMS *int64 `json:"deadline_ms,omitempty"`
	}{deadline.ms}
	body, _, err := cl.call(c.ctx, "POST", poolPath(pos[0], "drain"), in, false)
	if err != nil {
		return err
	}
	if !*wait {
		return c.stateLine(body, "draining")
	}
	// Poll rather than follow events: a poll cannot miss the transition.
	for {
		body, _, err = cl.call(c.ctx, "GET", poolPath(pos[0]), nil, false)
		if err != nil {
			return err
		}
		var p pool
		if err := json.Unmarshal(body, &p); err != nil {
			return fmt.Errorf("decoding answer: %w", err)
		}
		if p.State == "stopped" {
			if c.g.json {
				printJSON(c.stdout, body)
			} else if d := p.LastDrain; d != nil {
				fmt.Fprintf(c.stdout, "%s: stopped: drain took %v, forced: %t, leases left: %d\n",
					p.PoolID, time.Duration(d.DurationMS)*time.Millisecond, d.Forced, d.FinalLeases)
			} else {
				fmt.Fprintf(c.stdout, "%s: stopped (no drain recorded)\n", p.PoolID)
			}
			return nil
		}
		if !c.sleep(drainPoll) {
			return errors.New("interrupted: the drain goes on without poolctl")
		}
	}
}

// stateLine prints a `{pool_id, state}` answer as "POOL: verb (state S)".
func (c *cli) stateLine(body []byte, verb string) error {
	if c.g.json {
		printJSON(c.stdout, body)
		return nil
	}
	var ans struct {
		PoolID string `json:"pool_id"`
		State  string `json:"state"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return fmt.Errorf("decoding answer: %w", err)
	}
	fmt.Fprintf(c.stdout, "%s: %s (state %s)\n", ans.PoolID, verb, ans.State)
	return nil
}

func runReload(c *cli, args []string) error {
	fs := c.flags()
	model := fs.String("model", "", "the new model_ref (required)")
	version := fs.String("version", "", "the new engine_version (default: keep the current one)")
	var deadline msFlag
	fs.Var(&deadline, "deadline", "drain deadline before the old engine is stopped (default: the pool's drain_deadline)")
	wait := fs.Bool("wait", false, "wait until the pool has settled and print the result")
	pos, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	if *model == "" {
		return &usageError{"reload needs --model", fs}
	}
	cl, err := c.connect()
	if err != nil {
		return err
	}
	in := struct {
		NewModelRef   string `json:"new_model_ref"`
		EngineVersion string `json:"engine_version,omitempty"`
		DeadlineMS    *int64 `json:"deadline_ms,omitempty"`
		Wait          bool   `json:"wait,omitempty"`
	}{*model, *version, deadline.ms, *wait}
	// With --wait the daemon answers once the new engine is ready or rolled
	// back, which can take its startup_timeout: no --timeout on that request.
	body, _, err := cl.call(c.ctx, "POST", poolPath(pos[0], "reload"), in, *wait)
	if err != nil {
		return err
	}
	if !*wait {
		return c.stateLine(body, "reload started")
	}
	if c.g.json {
		printJSON(c.stdout, body)
	}
	var ans struct {
		Result        string `json:"result"`
		EngineVersion string `json:"engine_version"`
		DurationMS    int64  `json:"duration_ms"`
		RolledBack    bool   `json:"rolled_back"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return fmt.Errorf("decoding answer: %w", err)
	}
	if !c.g.json {
		fmt.Fprintf(c.stdout, "result: %s\nengine_version: %s\nduration: %v\nrolled_back: %t\n",
			ans.Result, orDash(ans.EngineVersion), time.Duration(ans.DurationMS)*time.Millisecond, ans.RolledBack)
	}
	if ans.Result != "succeeded" {
		return fmt.Errorf("reload of %s did not succeed: %s", pos[0], ans.Result)
	}
	return nil
}

func runStart(c *cli, args []string) error {
	pos, err := c.parse(c.flags(), args, 1)
	if err != nil {
		return err
	}
	cl, err := c.connect()
	if err != nil {
		return err
	}
	body, status, err := cl.call(c.ctx, "POST", poolPath(pos[0], "start"), nil, false)
	if err != nil {
		return err
	}
	if status == 200 { // already preloading or ready: nothing was changed
		return c.stateLine(body, "already running")
	}
	return c.stateLine(body, "starting")
}

func runLease(c *cli, args []string) error {
	fs := c.flags()
	var ttl msFlag
	fs.Var(&ttl, "ttl", "release the lease automatically after this long (default: no expiry)")
	pos, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	in := struct {
		TTLMS *int64 `json:"ttl_ms,omitempty"`
	}{ttl.ms}
	return c.simple("POST", poolPath(pos[0], "leases"), in, c.kv)
}

func (c *cli) kv(body []byte) error { return printKV(c.stdout, body) }

func runRelease(c *cli, args []string) error {
	pos, err := c.parse(c.flags(), args, 2)
	if err != nil {
		return err
	}
	return c.simple("DELETE", poolPath(pos[0], "leases", pos[1]), nil, func(body []byte) error {
		var ans struct {
			ActiveLeases int `json:"active_leases"`
		}
		if err := json.Unmarshal(body, &ans); err != nil {
			return fmt.Errorf("decoding answer: %w", err)
		}
		fmt.Fprintf(c.stdout, "%s: released %s (active leases: %d)\n", pos[0], pos[1], ans.ActiveLeases)
		return nil
	})
}

func runPlace(c *cli, args []string) error {
	fs := c.flags()
	model := fs.String("model", "", "only pools serving this model_ref")
	var pools listFlag
	fs.Var(&pools, "pool", "only this pool (repeatable)")
	var ttl msFlag
	fs.Var(&ttl, "ttl", "release the lease automatically after this long (default: no expiry)")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	in := struct {
		ModelRef string   `json:"model_ref,omitempty"`
		PoolIDs  []string `json:"pool_ids,omitempty"`
		TTLMS    *int64   `json:"ttl_ms,omitempty"`
	}{*model, pools, ttl.ms}
	return c.simple("POST", "/v1/placement", in, c.kv)
}

func runLogs(c *cli, args []string) error {
	fs := c.flags()
	tail := fs.Int("tail", -1, "print the last N lines (at most 1000; default: the daemon's)")
	follow := fs.Bool("f", false, "keep printing new lines as the engine writes them (Ctrl-C to stop)")
	fs.BoolVar(follow, "follow", false, "same as -f")
	pos, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	path := poolPath(pos[0], "logs")
	switch {
	case *tail > 1000:
		return &usageError{"--tail is at most 1000", fs}
	case *tail >= 0:
		path += "?tail=" + strconv.Itoa(*tail)
	case *tail != -1:
		return &usageError{"--tail must not be negative", fs}
	}
	if *follow {
		return c.followLogs(pos[0], path)
	}
	return c.simple("GET", path, nil, func(body []byte) error {
		lines, err := decodeLogLines(body)
		if err != nil {
			return err
		}
		for _, l := range lines {
			c.printLogLine(l)
		}
		return nil
	})
}

// logLine is one line of GET /v1/pools/{id}/logs.
type logLine struct {
	AtMS   int64  `json:"at_ms"`
	Stream string `json:"stream"`
	Text   string `json:"text"`
}

func decodeLogLines(body []byte) ([]logLine, error) {
	var ans struct {
		Lines []logLine `json:"lines"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return nil, fmt.Errorf("decoding answer: %w", err)
	}
	return ans.Lines, nil
}

func (c *cli) printLogLine(l logLine) {
	if c.g.json {
		b, _ := json.Marshal(l)
		fmt.Fprintln(c.stdout, string(b))
		return
	}
	fmt.Fprintf(c.stdout, "%s %-6s %s\n", fmtTime(l.AtMS), l.Stream, l.Text)
}

// logsFollowPoll is how often `logs -f` asks for new lines: the daemon keeps
// them in memory, so a GET is cheap, and half a second reads as live.
const logsFollowPoll = 500 * time.Millisecond

// followLogs prints the first answer of path, then polls the pool's last
// 1000 lines and prints those after the last one printed, until interrupted
// (exit 0). Lines are matched by time, stream and text, so a line that fell
// out of the daemon's ring between two polls is the only thing ever missed.
func (c *cli) followLogs(id, first string) error {
	cl, err := c.connect()
	if err != nil {
		return err
	}
	var last *logLine
	path := first
	for {
		body, _, err := cl.call(c.ctx, "GET", path, nil, false)
		if c.ctx.Err() != nil {
			return nil // interrupted: the normal way to stop following
		}
		if err != nil {
			return err
		}
		lines, err := decodeLogLines(body)
		if err != nil {
			return err
		}
		for _, l := range newLogLines(lines, last) {
			c.printLogLine(l)
		}
		if n := len(lines); n > 0 {
			l := lines[n-1]
			last = &l
		}
		path = poolPath(id, "logs") + "?tail=1000"
		if !c.sleep(logsFollowPoll) {
			return nil
		}
	}
}

// newLogLines returns the lines after last: after its latest occurrence, or,
// when it is no longer in lines, every line not older than it.
func newLogLines(lines []logLine, last *logLine) []logLine {
	if last == nil {
		return lines
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if lines[i] == *last {
			return lines[i+1:]
		}
	}
	for i, l := range lines {
		if l.AtMS >= last.AtMS {
			return lines[i:]
		}
	}
	return nil
}
