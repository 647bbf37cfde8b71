"""Roles of the hybrid design: supernodes (routing mesh, relays) and edge clients."""
