"""Reward models: the process reward model (PRM) interface, the trained hidden-state probe
(its head, its features, how it is trained) and the AUC that measures it.

Built-in PRMs register in `orchestra.techniques.process_rewards`; this package is
what they and the `orchestra reward` command are built on.
"""
