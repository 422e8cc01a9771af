"""Demo scenarios: published figures and the synthetic event streams that reproduce them."""
