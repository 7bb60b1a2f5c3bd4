"""`beaconsql serve`: the portal's reads over HTTP with the runner's paths and JSON, a live
progress page per job, ``/metrics`` and ``/healthz`` (SPEC "Serving it").

An optional extra (``pip install 'beaconsql[serve]'``: Starlette, uvicorn, psycopg_pool,
prometheus-client); nothing else in beaconsql imports this package. Modules: ``routes`` (the
route table: one declaration per portal read), ``app`` (the ASGI app: errors, JSON, page),
``reads`` (the pool, the per-request transaction, shared answers), ``metrics``.
"""
