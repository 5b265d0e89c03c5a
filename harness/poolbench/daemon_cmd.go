// This file is the hidden `poolbench daemon` subcommand: the daemon as a
// process of its own, so the scale measurement reads its RSS and CPU alone.
// It can also be run by hand to profile the daemon:
//
//	go build -tags poolbench_pprof -o /tmp/poolbench ./harness/poolbench
//	/tmp/poolbench daemon -pools 16 -pprof 127.0.0.1:6060
//	go tool pprof http://127.0.0.1:6060/debug/pprof/heap
//	go tool pprof 'http://127.0.0.1:6060/debug/pprof/profile?seconds=30'

package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/gpu"
	"github.com/pool-managerd/pool-managerd/supervisor"
)

// listeningPrefix starts the one line the subcommand prints on stdout.
const listeningPrefix = "poolbench-daemon: listening on "

// daemonMain runs supervisor.New + Start on a config file, as
// cmd/pool-managerd does, and blocks until SIGTERM or SIGINT.
func daemonMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("poolbench daemon", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "daemon config `file` (YAML)")
	logPath := fs.String("log", "", "append the daemon's JSON logs to this `file` (default: discard)")
	pools := fs.Int("pools", 0, "instead of -config: the scale measurement's config with `n` simulated pools")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this `address` (needs -tags poolbench_pprof)")
	if err := fs.Parse(args); err != nil || (*cfgPath == "") == (*pools == 0) {
		fmt.Fprintln(stderr, "usage: poolbench daemon {-config FILE | -pools N} [-log FILE] [-pprof ADDR]")
		return 2
	}
	if *pools > 0 {
		dir, err := os.MkdirTemp("", "poolbench-")
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		*cfgPath = filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(*cfgPath, scaleConfig(*pools), 0o600); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	if *pprofAddr != "" {
		if err := servePprof(*pprofAddr); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	var w io.Writer = io.Discard
	if *logPath != "" {
		f, err := os.OpenFile(*logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer f.Close()
		w = f
	}
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.Log.Level))
	logger := slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl}))
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	supervisor.ApplyGCDefault() // as cmd/pool-managerd does
	d, err := supervisor.New(supervisor.Options{Config: cfg, Logger: logger, SelfExe: self, Guard: gpu.NoGuard{}})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	ln, err := supervisor.Listen(cfg.Listen)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := d.Start(ln); err != nil {
		fmt.Fprintln(stderr, err)
		d.Shutdown()
		return 1
	}
	fmt.Fprintln(stdout, listeningPrefix+d.Addr().String())
	<-sigs
	d.Shutdown()
	return 0
}
