"""The model resource manager's parts, behind the ``ModelResourceManager`` facade.

``placement`` (the objects a decision is made of), ``planner`` (the one pure ``decide``),
``lifecycle`` (states and records), ``operations`` (load, unload, offload, restore, move, with
loaders outside the lock), ``loaders``, ``eviction``, ``keep_alive``, ``ensemble``,
``requantize``, ``queries`` (what views may ask), ``errors`` and ``settings``.
"""
