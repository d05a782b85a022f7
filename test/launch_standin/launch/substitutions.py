import os


class Substitution:
    def perform(self, context) -> str:
        raise NotImplementedError


class TextSubstitution(Substitution):
    def __init__(self, *, text: str) -> None:
        self.text = text

    def perform(self, context) -> str:
        return self.text


class LaunchConfiguration(Substitution):
    def __init__(self, variable_name, *, default=None) -> None:
        self.variable_name = variable_name
        self.default = default

    def perform(self, context) -> str:
        name = perform(self.variable_name, context)
        if name in context.launch_configurations:
            return context.launch_configurations[name]
        if self.default is None:
            raise RuntimeError(f"launch configuration '{name}' does not exist")  # SubstitutionFailure
        return perform(self.default, context)


class PathJoinSubstitution(Substitution):
    def __init__(self, substitutions) -> None:
        self.substitutions = list(substitutions)

    def perform(self, context) -> str:
        return os.path.join(*(perform(s, context) for s in self.substitutions))


def perform(value, context) -> str:
    """SomeSubstitutionsType -> str: text, a Substitution, or a list of them concatenated."""
    if isinstance(value, str):
        return value
    if isinstance(value, Substitution):
        return value.perform(context)
    return "".join(perform(v, context) for v in value)
