"""Model backends. Each speaks `orchestra.backend.Backend`; techniques never import them."""
