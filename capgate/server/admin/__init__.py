"""The operators' side of capgate: the admin API (``/admin/api/v1``), its OpenAPI description, the
dashboard (``/admin``) and the landing page (``/``)."""
