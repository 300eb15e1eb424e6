"""Compare two sets of specs and say what a merge would do."""

from ferry.plan.diff import ModelChange, Plan, make_plan

__all__ = ["ModelChange", "Plan", "make_plan"]
