package kinesis

import "container/heap"

// retryHeap orders keys waiting for their backoff by retryAt.
type retryHeap []*keyState

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].retryAt.Before(h[j].retryAt) }
func (h retryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}
func (h *retryHeap) Push(x any) {
	k := x.(*keyState)
	k.heapIdx = len(*h)
	*h = append(*h, k)
}
func (h *retryHeap) Pop() any {
	old := *h
	k := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return k
}

// scheduleRetry puts k in the retry heap until its backoff ends.
func (l *loop) scheduleRetry(k *keyState, attempts int) {
	k.retryAt = l.now.Add(l.retry.Delay(attempts))
	k.inRetry = true
	heap.Push(&l.retrying, k)
}

func (l *loop) fireRetries() {
	for len(l.retrying) > 0 && !l.retrying[0].retryAt.After(l.now) {
		k := heap.Pop(&l.retrying).(*keyState)
		k.inRetry = false
		l.makeReady(k, true)
	}
}
