//go:build race

package chaos

// raceEnabled makes the binary under test carry the race detector when
// the tests do.
const raceEnabled = true
