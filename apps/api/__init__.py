"""API plumbing shared by every app's ``api/``: the error shape and exception handler,
the JSON parser, common serializer fields, the command context of a request,
Idempotency-Key handling and throttles. It knows no domain app; the apps' ``api``
packages import it, never each other."""
