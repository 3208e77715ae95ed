package main

import (
	"context"
	"fmt"
	"runtime"
	"sort"

	"github.com/kuasar-go/kuasar/internal/version"
)

func init() {
	register("version", "print the version of kuasar and its engines", func(ctx context.Context, env *cliEnv, args []string) int {
		fmt.Fprintf(env.stdout, "kuasar %s (revision %s, %s, %s/%s)\n", version.Version, version.Revision, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	})
}

func sortedCommandNames() []string {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
