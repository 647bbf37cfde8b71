"""The directory's client side: one connection (``connection.py``) and the list of
servers a role fails over between (``servers.py``).  Nothing here imports the
server side."""
