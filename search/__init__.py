"""Architecture search over recipes (optuna). Not built yet: recipes are run one at a time."""
