"""The Ray edge: the only modules that import ``ray``.

- ``connect``: connecting a process (``rundispatcher``, tests) to Ray, and the environment
  its actors get;
- ``actors``: the actor shells over the plain classes (Coordinator, Organ, Agent, Dispatcher),
  their names and options, how each is created, and how the Coordinator and the dispatchers
  are found;
- ``clients``: how the plain classes call those actors (messages packed as tuples);
- ``driver``: the calls ``rundispatcher``'s supervisor makes, each bounded by a timeout;
- ``errors``: Ray's exceptions, translated into SeedCore's (``organism.messages``).

Importing this package imports nothing; the web process never does.
"""
