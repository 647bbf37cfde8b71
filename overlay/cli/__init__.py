"""The ``overlay`` command line: argument parsing and terminal output only."""
