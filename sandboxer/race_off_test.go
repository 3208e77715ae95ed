//go:build !race

package sandboxer_test

// raceEnabled says the tests run under the race detector, whose memory
// overhead TestThousandLifecycles must account for.
const raceEnabled = false
