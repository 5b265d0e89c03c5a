package actors

import (
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// The message sets are closed, and the compiler knows them: protoactor's
// Send and RequestFuture take any value, so every send in this module goes
// through SendPool, SendRegistry or Ask, which take only the messages the
// receiving actor handles (a test keeps raw sends out of the tree). A new
// message type gets its marker method next to its declaration and its case
// in the receiver's switch; the receivers' default case logs anything else
// (protoactor's own system messages aside, nothing else can arrive).

// PoolMessage is a message a pool actor handles: the commands and queries
// of the API and the registry (Drain, Reload, Start, GetStatus, GetLogs,
// LeasesChanged, GPUEvent, DevicesUpdate) and the pool's own internal
// messages (the results of its goroutines and timers). Only pointers
// implement it, as only pointers are handled.
type PoolMessage interface{ poolMessage() }

// RegistryMessage is a message the registry actor handles: registration and
// status updates from pools, the queries and lease operations of the API,
// subscriptions, Ping, Broadcast, and its own lease expiry timers. Only
// pointers implement it, as only pointers are handled.
type RegistryMessage interface{ registryMessage() }

// Question is a request answered with a value of type R: the request type
// names its reply type (GetPools is a Question[*PoolsReply]), so Ask infers
// R and a caller cannot mistake the reply's type.
type Question[R any] interface{ answeredBy(R) }

// SendPool sends m to the pool actor pid without waiting (a tell). c is the
// sender: the system's root context, or an actor's own context.
func SendPool(c actor.SenderContext, pid *actor.PID, m PoolMessage) { c.Send(pid, m) }

// SendRegistry sends m to the registry actor pid without waiting.
func SendRegistry(c actor.SenderContext, pid *actor.PID, m RegistryMessage) { c.Send(pid, m) }

// ErrUnexpectedReply is wrapped by Ask's error when the answer is not of
// the question's reply type (a receiver bug; never retriable).
var ErrUnexpectedReply = errors.New("unexpected reply")

// Ask sends q to pid and waits up to timeout for its answer, which must be
// of q's reply type R. The errors are protoactor's: actor.ErrTimeout when
// no answer came in time (timeout must be > 0: protoactor starts no timer
// otherwise, and the wait would never end), actor.ErrDeadLetter when pid
// is gone; and one wrapping ErrUnexpectedReply, naming both types, when the
// answer is of another type. Domain errors are not errors here: they travel
// in the reply (LeaseReply.Err, CommandReply.Err, ...), for the caller to
// read.
func Ask[R any](c actor.SenderContext, pid *actor.PID, q Question[R], timeout time.Duration) (R, error) {
	var zero R
	res, err := c.RequestFuture(pid, q, timeout).Result()
	if err != nil {
		return zero, err
	}
	r, ok := res.(R)
	if !ok {
		return zero, fmt.Errorf("%T answered with %T, want %T: %w", q, res, zero, ErrUnexpectedReply)
	}
	return r, nil
}
