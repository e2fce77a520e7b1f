"""The one exception every invalid setting raises (engine.args, engine.speculative_args)."""


class ArgsError(ValueError):
    """A setting is invalid; the message is one line meant for the operator."""
