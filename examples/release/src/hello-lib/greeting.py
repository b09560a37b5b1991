"""Formats the hello job's answers."""


def render(greeting: str, instance: str) -> str:
    """The body of GET /: the configured greeting and who answered."""
    return f"{greeting} (from {instance})\n"
