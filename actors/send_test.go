package actors

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/pool-managerd/pool-managerd/internal/clock"
)

func quietSystem(t *testing.T) *actor.ActorSystem {
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}))
	t.Cleanup(sys.Shutdown)
	return sys
}

// TestAskChecksTheReplyType: Ask returns the reply typed as its question
// names it, and an error wrapping ErrUnexpectedReply, naming both types,
// instead of a value of another type.
func TestAskChecksTheReplyType(t *testing.T) {
	sys := quietSystem(t)
	reg := sys.Root.Spawn(NewRegistryProps(clock.Real{}, slog.New(slog.NewTextHandler(io.Discard, nil))))
	pools, err := Ask(sys.Root, reg, &GetPools{}, 10*time.Second)
	if err != nil || pools == nil || len(pools.Pools) != 0 {
		t.Fatalf("GetPools from the registry = %+v, %v; want an empty *PoolsReply", pools, err)
	}

	// An actor that answers every question with Pong.
	liar := sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		if _, ok := c.Message().(actor.SystemMessage); ok {
			return
		}
		switch c.Message().(type) {
		case *actor.Started, *actor.Stopping, *actor.Stopped:
			return
		}
		c.Respond(&Pong{})
	}))
	got, err := Ask(sys.Root, liar, &GetPools{}, 10*time.Second)
	if !errors.Is(err, ErrUnexpectedReply) {
		t.Fatalf("Ask answered with the wrong type: %v, %v; want ErrUnexpectedReply", got, err)
	}
	if got != nil {
		t.Errorf("Ask returned %v with its error, want the zero reply", got)
	}
	for _, name := range []string{"*actors.GetPools", "*actors.Pong", "*actors.PoolsReply"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
	if _, err := Ask(sys.Root, liar, &Ping{}, 10*time.Second); err != nil {
		t.Errorf("Ping answered with Pong: %v", err)
	}
}

// TestAskTimesOutAndSeesDeadActors: an actor that never answers makes Ask
// return actor.ErrTimeout (at its timeout, not never); a stopped one,
// actor.ErrDeadLetter.
func TestAskTimesOutAndSeesDeadActors(t *testing.T) {
	sys := quietSystem(t)
	mute := sys.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {}))
	errc := make(chan error, 1)
	go func() {
		_, err := Ask(sys.Root, mute, &GetStatus{}, 50*time.Millisecond)
		errc <- err
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, actor.ErrTimeout) {
			t.Errorf("Ask to a mute actor: %v, want actor.ErrTimeout", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Ask with a 50ms timeout never returned")
	}

	if err := sys.Root.StopFuture(mute).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := Ask(sys.Root, mute, &GetStatus{}, 10*time.Second); !errors.Is(err, actor.ErrDeadLetter) {
		t.Errorf("Ask to a stopped actor: %v, want actor.ErrDeadLetter", err)
	}
}

// rawSends are protoactor's untyped send methods: outside send.go every
// send goes through SendPool, SendRegistry or Ask.
var rawSends = map[string]bool{"Send": true, "Request": true, "RequestFuture": true,
	"RequestWithCustomSender": true, "Forward": true}

// TestNoRawSends keeps the message sets closed: no file in the module
// (tests included) calls protoactor's Send, Request or RequestFuture
// directly, which would take any value.
func TestNoRawSends(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || path == filepath.Join(root, "actors", "send.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		checked++
		imports := map[string]bool{}
		for _, im := range f.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			name := p[strings.LastIndex(p, "/")+1:]
			if im.Name != nil {
				name = im.Name.Name
			}
			imports[name] = true
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || !rawSends[sel.Sel.Name] {
				return true
			}
			if id, ok := sel.X.(*ast.Ident); ok && imports[id.Name] {
				return true // a package's function (engine.Request), not a method
			}
			rel, _ := filepath.Rel(root, path)
			t.Errorf("%s:%d: raw %s: use actors.SendPool, SendRegistry or Ask", rel, fset.Position(call.Pos()).Line, sel.Sel.Name)
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("checked only %d files under %s: not the module root?", checked, root)
	}
}
