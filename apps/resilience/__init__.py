"""The resilient handler runtime: error taxonomy, retry policies, idempotency, circuit
breakers, dead letters and escalation. It knows no domain."""
