"""The client commands of ``laneway``: ``chat``, ``conversations``, ``events``,
``send``, ``pause``, ``interrupt``, ``run`` and ``lanes``, each a thin layer
over :class:`laneway.client.Client` that prints with rich.

:mod:`~laneway.commands.parsers` declares them and is all that ``laneway
--help`` imports; :mod:`~laneway.commands.running` runs the one asked for.
"""
