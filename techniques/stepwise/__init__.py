"""Step-wise search: answers grown one step at a time and steered by a process reward model.

One module per search technique; the step generation, the PRM scoring, the
budget units and the final pick they all share are the private modules here.
"""
