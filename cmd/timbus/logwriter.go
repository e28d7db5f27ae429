package main

import (
	"bufio"
	"io"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/rs/zerolog/diode"
)

// Log output runs off the request path: a callback's log line goes into a
// lock-free ring (zerolog's diode) and one goroutine writes the lines out in
// batches, one write per logFlushEvery or per full buffer rather than one
// per line. At thousands of callbacks a second, a write per line cost as much
// CPU as deciding.
const (
	logRingSize   = 1 << 16
	logPollEvery  = 5 * time.Millisecond
	logFlushEvery = 100 * time.Millisecond
	logBufferSize = 64 << 10
)

// asyncLog is the writer behind the service's logger; Close writes out what
// is pending.
type asyncLog struct {
	ring  diode.Writer
	batch *batchWriter
}

func newAsyncLog(w io.Writer, format func(io.Writer) io.Writer) *asyncLog {
	batch := newBatchWriter(w)
	warn := zerolog.New(batch)
	ring := diode.NewWriter(format(batch), logRingSize, logPollEvery, func(n int) {
		warn.Warn().Int("lines", n).Msg("log output fell behind: lines dropped")
	})
	return &asyncLog{ring: ring, batch: batch}
}

func (l *asyncLog) Write(p []byte) (int, error) { return l.ring.Write(p) }

// Close drains the ring, then flushes the batch.
func (l *asyncLog) Close() error {
	_ = l.ring.Close()
	return l.batch.Close()
}

// batchWriter buffers writes and flushes them every logFlushEvery. Its lock
// is shared only by the ring's writer goroutine and the flusher.
type batchWriter struct {
	mu   sync.Mutex
	buf  *bufio.Writer
	stop chan struct{}
	done chan struct{}
}

func newBatchWriter(w io.Writer) *batchWriter {
	b := &batchWriter{buf: bufio.NewWriterSize(w, logBufferSize), stop: make(chan struct{}), done: make(chan struct{})}
	go b.flushLoop()
	return b
}

func (b *batchWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *batchWriter) flushLoop() {
	defer close(b.done)
	tick := time.NewTicker(logFlushEvery)
	defer tick.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-tick.C:
			b.flush()
		}
	}
}

func (b *batchWriter) flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Flush()
}

// Close stops the flusher and writes out what is buffered. It is safe to call
// more than once.
func (b *batchWriter) Close() error {
	select {
	case <-b.stop:
	default:
		close(b.stop)
		<-b.done
	}
	return b.flush()
}
