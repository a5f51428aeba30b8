"""Console pages the admin's model lists can't be: live circuit breakers and projections.

Each view is a plain function; ``urls`` wraps it in ``admin.site.admin_view`` (staff only,
login redirect) and mounts it under ``admin/console/`` ahead of the admin's own URLs.
Changes are POSTs that need the operator's permission (403 without) and are audited.
"""
