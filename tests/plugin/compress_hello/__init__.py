"""A minimal third-party pass: counts the run's models and records a greeting."""

from compress.pipeline import Pass, PassConfig


class Hello(Pass):
    """Record a greeting and how many models the run holds."""

    name = "hello"

    class Config(PassConfig):
        greeting: str = "hello"

    def run(self, state, config):
        state.reports[self.name] = {"greeting": config.greeting, "models": sorted(state.models())}
        return state
