package gpu

import (
	"fmt"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// healthEvents are the NVML event types the guard listens for.
const healthEvents = uint64(nvml.EventTypeXidCriticalError | nvml.EventTypeDoubleBitEccError)

// watched is one device registered in the event set.
type watched struct {
	h     nvml.Device
	uuid  string
	index int
}

// startEvents registers every device that supports health events and starts
// the goroutine that waits on them. Devices that support none are skipped:
// NVML refuses a whole registration that names an unsupported type.
func (g *NVMLGuard) startEvents() {
	n, ret := g.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		g.log.Warn("no GPU health events", "err", "DeviceGetCount: "+describeReturn(ret, ""))
		return
	}
	set, ret := g.lib.EventSetCreate()
	if ret != nvml.SUCCESS {
		g.log.Warn("no GPU health events", "err", "EventSetCreate: "+describeReturn(ret, ""))
		return
	}
	var devs []watched
	for i := 0; i < n; i++ {
		if w, ok := g.register(set, i); ok {
			devs = append(devs, w)
		}
	}
	if len(devs) == 0 {
		set.Free()
		g.log.Info("no GPU supports health events; XIDs will not be watched")
		return
	}
	g.events = make(chan Event, eventBuffer)
	g.eventsDone = make(chan struct{})
	go g.watchEvents(set, devs)
}

func (g *NVMLGuard) register(set nvml.EventSet, i int) (watched, bool) {
	h, ret := g.lib.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		g.log.Warn("GPU not watched", "index", i, "err", "DeviceGetHandleByIndex: "+describeReturn(ret, ""))
		return watched{}, false
	}
	uuid, ret := h.GetUUID()
	if ret != nvml.SUCCESS {
		g.log.Warn("GPU not watched", "index", i, "err", "GetUUID: "+describeReturn(ret, ""))
		return watched{}, false
	}
	mask := healthEvents
	if supported, ret := h.GetSupportedEventTypes(); ret == nvml.SUCCESS {
		mask &= supported
	}
	if mask == 0 {
		g.log.Info("GPU reports no health events", "index", i, "uuid", uuid)
		return watched{}, false
	}
	switch ret := h.RegisterEvents(mask, set); ret {
	case nvml.SUCCESS:
		return watched{h: h, uuid: uuid, index: i}, true
	case nvml.ERROR_NOT_SUPPORTED:
		g.log.Info("GPU reports no health events", "index", i, "uuid", uuid)
	default:
		g.log.Warn("GPU not watched", "index", i, "uuid", uuid, "err", "RegisterEvents: "+describeReturn(ret, ""))
	}
	return watched{}, false
}

// watchEvents waits on the set until Close. Each Wait is bounded so Close
// never waits long; the set is freed here, before Close may call Shutdown.
func (g *NVMLGuard) watchEvents(set nvml.EventSet, devs []watched) {
	defer close(g.eventsDone)
	defer close(g.events)
	defer set.Free()
	for {
		select {
		case <-g.stop:
			return
		default:
		}
		data, ret := set.Wait(uint32(eventWaitTimeout / time.Millisecond))
		switch ret {
		case nvml.SUCCESS:
			g.onEvent(data, devs)
		case nvml.ERROR_TIMEOUT:
		case nvml.ERROR_GPU_IS_LOST:
			// Wait does not say which GPU; ask each.
			g.sweepLost(devs)
			g.pause()
		default:
			g.log.Warn("waiting for GPU events failed", "err", "EventSetWait: "+describeReturn(ret, ""))
			g.pause()
		}
	}
}

// pause waits eventErrorPause on the guard's clock, or until Close.
func (g *NVMLGuard) pause() {
	t, paused := g.clock.NewTimer(eventErrorPause)
	defer t.Stop()
	select {
	case <-g.stop:
	case <-paused:
	}
}

func (g *NVMLGuard) onEvent(data nvml.EventData, devs []watched) {
	w := whichDevice(data.Device, devs)
	ev := Event{UUID: w.uuid, Index: w.index, At: g.clock.Now()}
	switch {
	case data.EventType&nvml.EventTypeXidCriticalError != 0:
		ev.XID = data.EventData
		deviceLevel, known, desc := classifyXID(ev.XID)
		ev.DeviceLevel = deviceLevel
		ev.Message = fmt.Sprintf("XID %d (%s)", ev.XID, desc)
		if !known {
			g.log.Warn("unknown XID, treated as engine-level", "uuid", ev.UUID, "xid", ev.XID)
		}
		if g.onXID != nil {
			g.onXID(ev.UUID, ev.XID)
		}
	case data.EventType&nvml.EventTypeDoubleBitEccError != 0:
		ev.XID, ev.DeviceLevel = xidDBE, true
		ev.Message = "XID 48 (double-bit ECC error event)"
	default:
		return
	}
	g.deliver(ev)
}

// whichDevice maps an event's handle back to the registered device. Handles
// are stable for the life of an NVML session, so equality suffices; the
// UUID is asked only when the handle is unknown.
func whichDevice(h nvml.Device, devs []watched) watched {
	for _, w := range devs {
		if w.h == h {
			return w
		}
	}
	if h != nil {
		if uuid, ret := h.GetUUID(); ret == nvml.SUCCESS {
			for _, w := range devs {
				if w.uuid == uuid {
					return w
				}
			}
		}
	}
	return watched{index: -1}
}

// sweepLost marks every watched GPU that answers ERROR_GPU_IS_LOST, once.
func (g *NVMLGuard) sweepLost(devs []watched) {
	for _, w := range devs {
		if _, ret := w.h.GetMemoryInfo(); ret != nvml.ERROR_GPU_IS_LOST {
			continue
		}
		if _, marked := g.unhealthyMark(w.uuid); marked {
			continue
		}
		g.deliver(Event{UUID: w.uuid, Index: w.index, DeviceLevel: true, At: g.clock.Now(),
			Message: returnName(nvml.ERROR_GPU_IS_LOST) + " (GPU lost)"})
	}
}

// deliver marks the device when the event says so, logs, and sends without
// blocking: a slow reader loses events (counted), never stalls NVML.
func (g *NVMLGuard) deliver(ev Event) {
	if ev.DeviceLevel {
		g.markUnhealthy(ev)
		g.log.Error("GPU unhealthy; no engine will start on it until its pool is restarted",
			"uuid", ev.UUID, "index", ev.Index, "xid", ev.XID, "reason", ev.Message)
	} else {
		g.log.Warn("GPU engine-level XID; the device stays usable",
			"uuid", ev.UUID, "index", ev.Index, "xid", ev.XID, "reason", ev.Message)
	}
	select {
	case g.events <- ev:
	default:
		// Log the first drop and every 100th: a stalled reader during an Xid
		// storm must not turn into a log storm.
		if n := g.dropped.Add(1); n == 1 || n%100 == 0 {
			g.log.Warn("GPU events dropped: nobody is reading", "uuid", ev.UUID, "xid", ev.XID, "dropped", n)
		}
	}
}
