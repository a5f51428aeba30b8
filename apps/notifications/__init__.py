"""Notifications: email and webhook deliveries, breaker-guarded, each delivered once."""
