"""A key-value server and the ``inv deploy`` that runs it across a cluster (see deploy.py).

``kvstore.py`` and ``rank_client.py`` are standalone programs (standard library only),
copied to the hosts as they are; ``deploy.py`` drives them from this machine.
"""
