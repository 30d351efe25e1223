"""Model providers: the only code that touches the network (or runs a model in-process).

Which providers there are, and how a spec becomes an adapter: ``pmm.providers.registry``.
"""
