"""Built-in process reward models, one module each, named for the PRM it registers (`orchestra.reward.process_reward`)."""
