"""Reusable constructs, one logical unit per module; stacks create providers and pass values in."""
