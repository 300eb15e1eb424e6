"""Pipeline step entrypoints: `ferry step <name>`, run by the rendered Workflow."""
