package chaos

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
)

// runWorkers runs n workers until each returns. Each draws from its own
// source, seeded from the shared one before they start, so a run replays
// from its seed whatever the workers' interleaving.
func runWorkers(ctx context.Context, n int, seed *rand.Rand, work func(ctx context.Context, me int, rng *rand.Rand) error) error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		rng := rand.New(rand.NewPCG(seed.Uint64(), seed.Uint64()))
		wg.Go(func() { errs[i] = work(ctx, i, rng) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
