package bench

import "context"

func criScenario(ctx context.Context, r *runner) error    { return nil }
func crictlScenario(ctx context.Context, r *runner) error { return nil }
func vmStart(ctx context.Context, r *runner) error        { return nil }
