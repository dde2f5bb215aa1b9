"""``make bench``: fan-out figures of the broadcaster against the how-to's design.

:mod:`.driver` runs everything; :mod:`.loadgen` and :mod:`.wsclient` are the
load generator; :mod:`.baseline` is the how-to's server; :mod:`.stack` starts
the processes and reads /proc; :mod:`.population` makes users, tokens and
events through the Django project; :mod:`.tokens` asks the site for the
tokens of a reconnect storm; :mod:`.report` and :mod:`.plots` turn the
counts into tables, JSON lines and SVG. docs/performance.md says how to run
it and what it measured.
"""
