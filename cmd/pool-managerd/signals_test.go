package main

import (
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// blockingLoad is a config loader whose every call blocks until released.
type blockingLoad struct {
	calls   atomic.Int32
	entered chan struct{}
	release chan struct{}
}

func newBlockingLoad() *blockingLoad {
	return &blockingLoad{entered: make(chan struct{}, 16), release: make(chan struct{})}
}

func (b *blockingLoad) load() (*config.Config, error) {
	b.calls.Add(1)
	b.entered <- struct{}{}
	<-b.release
	return &config.Config{}, nil
}

func recv(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitLimit):
		t.Fatalf("no %s within %s", what, waitLimit)
	}
}

// SIGTERM ends the signal loop while a SIGHUP's read blocks, and SIGHUPs
// that come during a read are merged into one more read.
func TestSignalLoopAnswersDuringBlockedReload(t *testing.T) {
	t.Parallel()
	sigs := make(chan os.Signal, 8)
	bl := newBlockingLoad()
	var applied atomic.Int32
	logs := &testutil.SyncBuffer{}
	out := make(chan os.Signal, 1)
	go func() {
		out <- awaitStop(sigs, bl.load, func(*config.Config) { applied.Add(1) }, nil,
			slog.New(slog.NewJSONHandler(logs, nil)), time.Hour)
	}()
	sigs <- syscall.SIGHUP
	recv(t, bl.entered, "first read")
	for range 3 {
		sigs <- syscall.SIGHUP
	}
	deadline := time.Now().Add(waitLimit)
	for strings.Count(logs.String(), "config.reload_queued") < 3 && time.Now().Before(deadline) {
		time.Sleep(pollEvery)
	}
	bl.release <- struct{}{} // the first read ends; the merged one starts
	recv(t, bl.entered, "the merged read")
	if n := applied.Load(); n != 1 {
		t.Fatalf("applied %d configs after the first read, want 1", n)
	}
	sigs <- syscall.SIGTERM // while the second read blocks
	select {
	case sig := <-out:
		if sig != syscall.SIGTERM {
			t.Fatalf("signal loop returned %v, want SIGTERM", sig)
		}
	case <-time.After(waitLimit):
		t.Fatal("SIGTERM not honoured while a config read blocks")
	}
	if n := bl.calls.Load(); n != 2 {
		t.Fatalf("%d config reads for 4 SIGHUPs during one read, want 2", n)
	}
	close(bl.release)
}

// A read that does not finish within the timeout is abandoned: the reload
// is refused and logged, and the loop goes on answering.
func TestSignalLoopAbandonsSlowRead(t *testing.T) {
	t.Parallel()
	sigs := make(chan os.Signal, 8)
	bl := newBlockingLoad()
	defer close(bl.release)
	logs := &testutil.SyncBuffer{}
	out := make(chan os.Signal, 1)
	go func() {
		out <- awaitStop(sigs, bl.load, func(*config.Config) { t.Error("a config was applied") }, nil,
			slog.New(slog.NewJSONHandler(logs, nil)), 50*time.Millisecond)
	}()
	sigs <- syscall.SIGHUP
	recv(t, bl.entered, "the read")
	deadline := time.Now().Add(waitLimit)
	for !strings.Contains(logs.String(), "did not finish within") && time.Now().Before(deadline) {
		time.Sleep(pollEvery)
	}
	if !strings.Contains(logs.String(), `"msg":"config.reload_failed"`) {
		t.Fatalf("no config.reload_failed for a read past the timeout: %s", logs.String())
	}
	sigs <- syscall.SIGHUP // a new read starts: the loop is not stuck on the old one
	recv(t, bl.entered, "the next read")
	sigs <- syscall.SIGINT
	select {
	case sig := <-out:
		if sig != syscall.SIGINT {
			t.Fatalf("signal loop returned %v, want SIGINT", sig)
		}
	case <-time.After(waitLimit):
		t.Fatal("SIGINT not honoured")
	}
}
