package deciders_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: a
// stopped Decider, its NATS connection and the tests' NATS servers must
// leave nothing behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
