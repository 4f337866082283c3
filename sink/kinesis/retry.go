package kinesis

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

// fireRetries makes the keys whose backoff has ended ready.
func (l *loop) fireRetries() {
	for k := l.reqs.due(l.now); k != nil; k = l.reqs.due(l.now) {
		l.makeReady(k, true)
	}
}
