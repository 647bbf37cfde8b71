"""The directory's server side (``overlay server``): the trio listener
(``listener.py``), the sans-IO service (``service/``), the stores (``store.py``
for SQLite, ``store_pg.py`` for PostgreSQL), password hashing, rate limits and
brute-force throttling (``limits.py``), and the glue that lets several server
processes share one database (``cluster.py``, ``peers.py``)."""
