"""The login/contacts/presence directory: the hybrid design's central part.

- ``protocol.py``, ``certificates.py``: what client and server say to each other
  (requests, responses with HTTP-like status codes, notices, sealed passwords)
  and the certificates the server signs; pure, shared by both sides.
- ``client/``: what roles, chat and the CLI use to talk to a directory server
  (:class:`~overlay.directory.client.connection.DirectoryClient`) and to fail
  over between several (``servers.py``).
- ``server/``: the ``overlay server`` process: its trio listener, the sans-IO
  service, the stores (SQLite, PostgreSQL), limits and the cluster glue.
"""
