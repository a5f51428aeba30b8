"""The event store: events, aggregates, the repository, the outbox and its relay.

It knows no domain. Apps register event classes and handlers; the store persists,
orders, publishes and replays them.
"""
