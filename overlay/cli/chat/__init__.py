"""``overlay chat``: talk to contacts from a terminal, from a script, or as a JSON stream.

One process is a whole edge client (like ``overlay client``: log in, attach
to the nearest supernode) with the chat engine (:mod:`overlay.chat.service`)
on top, in one of three modes:

interactive (the default, :mod:`.interactive`)
    A line editor (the pure :mod:`.editing` driven by :mod:`.terminal`:
    cursor keys, history, Tab completion) reads commands and messages while
    incoming messages, receipts and presence changes are printed above the
    line being typed; a message's line changes in place from sent to delivered.
one-shot (``--to CONTACT``, :mod:`.one_shot`)
    Send one message and exit 0 only once the contact's receipt came back;
    otherwise exit 1 with the reason.  A message that could not be delivered
    stays queued in the history and goes out the next time ``overlay chat``
    runs for the same user, which is why "queued" is not a success: the
    process that would send it is exiting.
JSON (``--json``, :mod:`.json_lines`)
    One JSON object per line, ``ready`` first, then every chat event, for
    scripts to consume.

:mod:`.command` parses the command line and runs the process;
:mod:`.client` is what every mode works with.

The history is ``STATE/chat-USER.sqlite3``.  Ctrl-C (or SIGTERM) is an orderly
stop and exits 0, as ``overlay node`` does; only in one-shot mode, where it
means "not delivered", it exits 130.
"""

from overlay.cli.chat.command import add_parser, run_chat

__all__ = ["add_parser", "run_chat"]
