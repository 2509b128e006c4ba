"""Built-in scorers, one module each, named for the scorer it registers (`orchestra.scorer`)."""
