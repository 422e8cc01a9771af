"""removal-audit: the domain model, the lifecycle logic, the Beam transforms and the CLI."""
