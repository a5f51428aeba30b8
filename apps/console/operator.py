"""The operator account that `make run` and Docker Compose create on their first start."""

from __future__ import annotations

OPERATOR_USERNAME = "admin"
# Where the operator's reminders and escalation mails go unless OPERATOR_EMAIL or --email say
# otherwise: the console mail backend of `make run` prints them.
DEFAULT_OPERATOR_EMAIL = "admin@localhost"
